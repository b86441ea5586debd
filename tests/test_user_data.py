"""Users' own data: any channels and H x W, split folders of any name, IDX and npz files, preprocessing
options, torch Datasets / DataLoaders / tensors in the library, and what the reports say about it."""

from __future__ import annotations

import gzip
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import harden
from harden.cli import main
from harden.data import DataWarning, as_image_dataset, image_dataset, load_dataset, select
from harden.errors import UsageError
from harden.training import make_config
from harden.training.train_data import held_out_count

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = dict(epochs=1, batch_size=8, steps=1, val_steps=1, method="fgsm-rs", progress=False, bn_recalib=False)


def _png(path: Path, size: tuple[int, int], colour: tuple[int, ...] | int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{train,val,test}/{a,b,c}/ with PNG and JPEG images of different sizes and modes."""
    root = tmp_path_factory.mktemp("mixed")
    sizes = [(40, 30), (17, 33), (64, 64)]
    for split in ("train", "val", "test"):
        for label, cls in enumerate("abc"):
            for i, size in enumerate(sizes):
                colour = (80 * label, 40 * i, 200)
                if i == 1:
                    Image.new("RGB", size, colour).save(_dir(root / split / cls) / f"{i}.jpg", quality=95)
                else:
                    _png(root / split / cls / f"{i}.png", size, colour)
    return root


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: bytes | None = None) -> None:
    header = (magic or bytes([0, 0, 8, array.ndim])) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if gz else blob)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST-style IDX files: 12 train images (gzip) and 6 test images (raw) of 3 classes, 10 x 8 pixels."""
    d = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 12, True), ("t10k", 6, False)):
        ext = ".gz" if gz else ""
        _write_idx(d / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 10, 8)), gz=gz)
        _write_idx(d / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 3, gz=gz)
    return d


def _tiny_net(channels: int, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def _model(input_size, classes: int = 3) -> harden.HardenedModel:
    torch.manual_seed(0)
    return harden.wrap(_tiny_net(input_size[0], classes), input_size=input_size, num_classes=classes, name="tiny")


# ------------------------------------------------------------------------- channels and H x W


def test_mixed_folder_comes_at_the_models_shape_including_non_square(mixed):
    ds = load_dataset(f"imagefolder:{mixed}", "train", image_size=(3, 64, 48))
    assert ds.classes == ["a", "b", "c"] and len(ds) == 9 and ds.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    shapes = {tuple(ds[i][0].shape) for i in range(len(ds))}
    assert shapes == {(3, 64, 48)}
    x, _ = ds[2]  # a plain 64x64 image: resized to cover 64x48, centre-cropped; colour kept
    assert x[2].mean().item() == pytest.approx(200 / 255, abs=1e-6)
    assert ds.file_names([0, 4]) == ["train/a/0.png", "train/b/1.jpg"]


def test_grayscale_files_become_one_channel_and_rgb_files_convert_as_pil_does(tmp_path):
    _png(tmp_path / "g" / "train" / "x" / "0.png", (12, 12), 77, mode="L")
    _png(tmp_path / "g" / "train" / "y" / "0.png", (12, 12), (255, 0, 0))
    ds = load_dataset(f"imagefolder:{tmp_path / 'g'}", "train", image_size=(1, 12, 12))
    gray, red = ds[0][0], ds[1][0]
    assert gray.shape == red.shape == (1, 12, 12)
    assert gray.mean().item() == pytest.approx(77 / 255) and red.mean().item() == pytest.approx(76 / 255)
    rgb = load_dataset(f"imagefolder:{tmp_path / 'g'}", "train", image_size=12)[0][0]
    assert rgb.shape == (3, 12, 12) and torch.allclose(rgb, gray.expand(3, -1, -1))
    with pytest.raises(UsageError, match="read as 1 \\(L\\) or 3 \\(RGB\\) channels"):
        load_dataset(f"imagefolder:{tmp_path / 'g'}", "train", image_size=(4, 12, 12))


def test_tensor_sources_convert_channels_by_repeating_and_by_luma(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=rgb, y=np.array([0, 1, 0, 1]))
    with pytest.warns(DataWarning, match="no per-split arrays"):
        one = load_dataset(f"npz:{tmp_path / 'rgb.npz'}", "test", image_size=(1, 9, 7))
    pil = np.array(Image.fromarray(rgb[2], "RGB").convert("L"))
    assert torch.equal((one[2][0][0] * 255).round().to(torch.uint8), torch.from_numpy(pil))  # PIL's luma exactly
    gray = rgb[..., 0]
    np.savez(tmp_path / "gray.npz", x=gray, y=np.array([0, 1, 0, 1]))
    with pytest.warns(DataWarning):
        three = load_dataset(f"npz:{tmp_path / 'gray.npz'}", "test", image_size=(3, 9, 7))
    x = three[1][0]
    assert x.shape == (3, 9, 7) and torch.equal(x[0], x[2]) and torch.equal(x[0], torch.from_numpy(gray[1]) / 255.0)


def test_resize_and_crop_options(tmp_path):
    _png(tmp_path / "r" / "train" / "a" / "0.png", (80, 40), (10, 20, 30))
    spec = f"imagefolder:{tmp_path / 'r'}"
    straight = load_dataset(spec, "train", image_size=(3, 16, 24), crop="none")[0][0]
    assert straight.shape == (3, 16, 24)
    resized = load_dataset(spec, "train", image_size=(3, 16, 24), resize=30)[0][0]
    assert resized.shape == (3, 16, 24)
    exact = load_dataset(spec, "train", image_size=(3, 16, 24), resize="20x30")[0][0]
    assert exact.shape == (3, 16, 24)
    alone = load_dataset(spec, "train", resize=20)[0][0]
    assert alone.shape == (3, 20, 40)  # the short side to 20, the aspect kept
    with pytest.raises(UsageError, match="--resize 12 is smaller than the model's input 16x24; give at least 24"):
        load_dataset(spec, "train", image_size=(3, 16, 24), resize=12)
    with pytest.raises(UsageError, match="with --crop none images are resized straight"):
        load_dataset(spec, "train", image_size=16, resize=20, crop="none")
    with pytest.raises(UsageError, match="--crop must be one of center, none"):
        load_dataset(spec, "train", image_size=16, crop="random")
    with pytest.raises(UsageError, match="--resize must be N or HxW"):
        load_dataset(spec, "train", image_size=16, resize="big")


# ------------------------------------------------------------------------------ ImageFolder splits


def test_any_split_folder_and_one_line_errors(mixed, tmp_path):
    val = load_dataset(f"imagefolder:{mixed}", "val", image_size=16)
    assert val.split == "val" and len(val) == 9 and val.file_names([8]) == ["val/c/2.png"]
    with pytest.raises(UsageError, match=r"has no 'holdout' split \(it has: test, train, val\); pick one with --split"):
        load_dataset(f"imagefolder:{mixed}", "holdout")
    with pytest.raises(UsageError, match="split must be a name"):
        load_dataset(f"imagefolder:{mixed}", "../train")
    (tmp_path / "t" / "train" / "dog").mkdir(parents=True)
    _png(tmp_path / "t" / "train" / "cat" / "0.png", (8, 8), (1, 2, 3))
    with pytest.raises(UsageError) as info:
        load_dataset(f"imagefolder:{tmp_path / 't'}", "train")
    dog = tmp_path / "t" / "train" / "dog"
    assert str(info.value) == f"class folder '{dog}' holds no images; remove it or add images"


def test_a_flat_tree_warns_that_training_and_evaluation_images_are_the_same(mixed):
    flat = f"imagefolder:{mixed / 'train'}"
    with pytest.warns(DataWarning, match="training and evaluation read the same images") as seen:
        ds = load_dataset(flat, "test", image_size=16)
    assert len(ds) == 9 and len(seen) == 1 and "\n" not in str(seen[0].message)
    with pytest.raises(UsageError, match="has no 'val' split folder"):
        load_dataset(flat, "val")


def test_first_n_of_class_sorted_data_warns_and_random_subset_does_not(mixed):
    ds = load_dataset(f"imagefolder:{mixed}", "test", image_size=16)
    with pytest.warns(DataWarning, match="the first 4 images .* hold 2 of its 3 classes .* --random-subset"):
        first = select(ds, 4)
    assert first.describe()["files_head"] == ["test/a/0.png", "test/a/1.jpg", "test/a/2.png", "test/b/0.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        select(ds, 4, random_subset=True)
        select(ds, None)


# ---------------------------------------------------------------------------------------------- IDX


def test_idx_splits_gzip_or_raw_and_class_names(idx_dir, tmp_path):
    train = load_dataset(f"idx:{idx_dir}", "train", image_size=(1, 10, 8))
    test = load_dataset(f"idx:{idx_dir}", "test")
    assert (len(train), len(test)) == (12, 6) and train.classes == ["0", "1", "2"] and test.labels[:4] == [0, 1, 2, 0]
    raw = gzip.decompress((idx_dir / "train-images-idx3-ubyte.gz").read_bytes())[16:]
    assert torch.equal((train[1][0][0] * 255).round().to(torch.uint8),
                       torch.frombuffer(bytearray(raw[80:160]), dtype=torch.uint8).view(10, 8))
    assert test[0][0].shape == (1, 10, 8) and train.file_names([0]) is None
    named = tmp_path / "named"
    named.mkdir()
    for f in idx_dir.iterdir():
        (named / f.name).write_bytes(f.read_bytes())
    (named / "classes.txt").write_text("zero\none\ntwo\n")
    assert load_dataset(f"idx:{named}", "test").classes == ["zero", "one", "two"]
    with pytest.raises(UsageError, match="split must be one of train, test for idx data"):
        load_dataset(f"idx:{idx_dir}", "val")


def test_idx_files_that_are_wrong_are_one_line_errors(idx_dir, tmp_path):
    def folder(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in idx_dir.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d

    bad = folder("magic")
    _write_idx(bad / "t10k-images-idx3-ubyte", np.zeros((6, 10, 8)), magic=b"\x12\x34\x08\x03")
    with pytest.raises(UsageError, match="is not an IDX file \\(its magic number is 0x12340803"):
        load_dataset(f"idx:{bad}", "test")
    cut = folder("cut")
    blob = (cut / "t10k-images-idx3-ubyte").read_bytes()
    (cut / "t10k-images-idx3-ubyte").write_bytes(blob[:-5])
    with pytest.raises(UsageError, match="holds 475 bytes of data but its header announces 480"):
        load_dataset(f"idx:{cut}", "test")
    short = folder("labels")
    _write_idx(short / "t10k-labels-idx1-ubyte", np.zeros(5))
    with pytest.raises(UsageError, match="holds 6 images but .* 5 labels"):
        load_dataset(f"idx:{short}", "test")
    only_test = folder("only")
    for f in only_test.glob("train-*"):
        f.unlink()
    with pytest.raises(UsageError, match=r"has no train split \(no train-images-idx3-ubyte\[.gz\]; it has: test\)"):
        load_dataset(f"idx:{only_test}", "train")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="no shared Fashion-MNIST here")
def test_real_fashion_mnist_reads_as_published():
    test = load_dataset(f"idx:{SHARED / 'fashion-mnist'}", "test", image_size=(1, 28, 28))
    assert len(test) == 10_000 and test.num_classes == 10
    assert all(test.labels.count(c) == 1000 for c in range(10))
    x, y = test[0]
    assert x.shape == (1, 28, 28) and y == 9 and 0 <= float(x.min()) and float(x.max()) <= 1  # an ankle boot


# ---------------------------------------------------------------------------------------------- npz


def test_npz_layouts_splits_and_classes(tmp_path):
    rng = np.random.default_rng(2)
    nchw = rng.integers(0, 256, (5, 3, 6, 4), dtype=np.uint8)
    np.savez(tmp_path / "keras.npz", x_train=nchw, y_train=np.arange(5) % 2, x_test=nchw.transpose(0, 2, 3, 1)[:2],
             y_test=np.array([1, 0]), classes=np.array(["cat", "dog"]))
    train = load_dataset(f"npz:{tmp_path / 'keras.npz'}", "train")
    test = load_dataset(f"npz:{tmp_path / 'keras.npz'}", "test")
    assert train.classes == ["cat", "dog"] and len(train) == 5 and test.labels == [1, 0]
    assert torch.equal(train[0][0], test[0][0]) and train[0][0].shape == (3, 6, 4)  # NCHW and NHWC agree
    with pytest.raises(UsageError, match=r"has no val split \(it has: test, train\)"):
        load_dataset(f"npz:{tmp_path / 'keras.npz'}", "val")


@pytest.mark.parametrize("arrays, needle", [
    ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.int64)}, "is float32; harden reads uint8 images"),
    ({"images": np.zeros((2, 4, 4), np.uint8)}, "has no 'x' and 'y' arrays \\(it has: images\\)"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(3, np.int64)}, "holds 2 images but 3 labels"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(2, np.float32)}, "must be integer labels"),
    ({"x": np.zeros((2, 5, 5, 5), np.uint8), "y": np.zeros(2, np.int64)}, "expected images \\(N, H, W, C\\)"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2]), "classes": np.array(["a", "b"])},
     "must be 3 or more strings"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(2, np.int64), "classes": np.array([object()])},
     "holds an object array"),
])
def test_npz_mistakes_are_one_line_errors(tmp_path, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UsageError, match=needle) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        load_dataset(f"npz:{tmp_path / 'd.npz'}", "test")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="data file .* does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}", "test")


# ------------------------------------------------------------------------ the user's own objects


class _PilItems(Dataset):
    """A map-style Dataset of (PIL image, label), with ``targets`` and ``classes`` as torchvision's have."""

    classes = ["dark", "mid", "light"]

    def __init__(self, n: int = 24) -> None:
        self.targets = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return Image.new("RGB", (20, 14), (100 * self.targets[i],) * 3), self.targets[i]


def _tensors(n: int = 24, shape=(3, 12, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 3
    return (y.float() / 3).view(-1, 1, 1, 1).expand(n, *shape).clone(), y


def test_as_image_dataset_takes_datasets_loaders_and_tensors():
    ds = as_image_dataset(_PilItems(), input_size=(1, 12, 10))
    assert ds.classes == _PilItems.classes and ds[4][0].shape == (1, 12, 10) and ds[4][1] == 1
    x, y = _tensors()
    loader = as_image_dataset(DataLoader(TensorDataset(x, y), batch_size=5), classes=3)
    assert len(loader) == 24 and loader.classes == ["0", "1", "2"] and torch.equal(loader[7][0], x[7])
    pair = as_image_dataset((x, y), input_size=(3, 8, 8))
    assert pair[0][0].shape == (3, 8, 8) and pair.labels == y.tolist()
    with pytest.raises(UsageError, match="tensors hold values in \\[-1, 0.333\\]; harden takes images in \\[0, 1\\]"):
        as_image_dataset((x * 2 - 1, y))
    with pytest.raises(UsageError, match="has labels up to 2 but 2 classes"):
        as_image_dataset((x, y), classes=["a", "b"])
    with pytest.raises(UsageError, match="data must be a data spec"):
        as_image_dataset([1, 2, 3])


def test_image_dataset_takes_the_users_own_preprocessing(mixed):
    from torchvision.transforms import v2

    prep = v2.Compose([v2.Resize(20), v2.CenterCrop((16, 12)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    ds = image_dataset(f"imagefolder:{mixed}", "train", input_size=(3, 16, 12), transform=prep)
    assert {tuple(ds[i][0].shape) for i in range(len(ds))} == {(3, 16, 12)}
    gray = image_dataset(f"imagefolder:{mixed}", "train", input_size=(1, 16, 12), transform=prep)
    assert gray[0][0].shape == (1, 16, 12)  # the transform got an L image
    normalizing = v2.Compose([prep, v2.Normalize([0.5] * 3, [0.1] * 3)])
    with pytest.raises(UsageError, match="leave Normalize out"):
        image_dataset(f"imagefolder:{mixed}", "train", transform=normalizing)[0]


@pytest.mark.parametrize("kind", ["dataset", "loader", "tensors"])
def test_finetune_and_evaluate_take_datasets_loaders_and_tensors(kind):
    x, y = _tensors(40, (3, 12, 10))
    data = {"dataset": _PilItems(40), "loader": DataLoader(TensorDataset(x, y), batch_size=16),
            "tensors": (x, y)}[kind]
    model = _model((3, 12, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights, a held-out set of a tenth
        tuned = harden.finetune(model, data, **TINY)
    entry = tuned.provenance.finetune
    assert entry.data == {"dataset": "dataset:_PilItems", "loader": "DataLoader", "tensors": "tensors"}[kind]
    assert entry.validation.n == 4 and entry.train_n == 36  # 512 is more than a third of 40: a tenth held out
    report = harden.evaluate(tuned, data, attack="fgsm", n=12, random_subset=True, batch_size=6, device="cpu")
    assert report["n"] == 12 and 0 <= report["robust_acc"] <= report["clean_acc"] <= 100


def test_a_failing_run_says_only_what_failed(mixed):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a flat tree's warning would fail the test
        with pytest.raises(UsageError, match="has 3 classes but the model has 5 outputs"):
            harden.finetune(_model((3, 8, 8), classes=5), f"imagefolder:{mixed / 'train'}", **TINY)
        with pytest.raises(UsageError, match="the model has 5 classes but"):
            harden.evaluate(_model((3, 8, 8), classes=5), f"imagefolder:{mixed / 'train'}", n=4, attack="fgsm")


def test_val_n_adapts_to_small_data_and_says_so():
    assert [held_out_count(512, n) for n in (50_000, 2000, 1000, 40, 3, 2)] == [512, 512, 100, 4, 1, 0]
    assert held_out_count(0, 40) == 0 and held_out_count(10, 40) == 10
    x, y = _tensors(30, (3, 8, 8))
    with pytest.warns(DataWarning, match="--val-n 512 is more than a third of the 30 training images: holding out 3"):
        harden.finetune(_model((3, 8, 8)), (x, y), **TINY)


def test_augment_setting_and_the_strong_policy():
    from harden.runtime.session import DistSession
    from harden.training import Trainer

    assert make_config(augment=True).augment == "crop-flip" and make_config(augment=False).augment == "none"
    with pytest.raises(UsageError, match="--augment must be one of none, crop-flip, strong"):
        make_config(augment="heavy")
    x_u8 = torch.randint(0, 256, (6, 1, 12, 10), dtype=torch.uint8)
    outs = []
    for _ in range(2):
        trainer = Trainer(_model((1, 12, 10)), make_config(augment="strong"), device=torch.device("cpu"),
                          dist=DistSession())
        trainer.reseed(0)
        outs.append(trainer.prepare(x_u8))
    assert outs[0].shape == (6, 1, 12, 10) and torch.equal(outs[0], outs[1])  # seeded per epoch
    plain = Trainer(_model((1, 12, 10)), make_config(augment="none"), device=torch.device("cpu"), dist=DistSession())
    assert torch.equal(plain.prepare(x_u8), x_u8.float() / 255)


# ----------------------------------------------------------------------------------- reports and CLI


def test_reports_name_the_files_evaluated(mixed):
    model = _model((3, 16, 12))
    report = harden.evaluate(model, f"imagefolder:{mixed}", split="val", attack="fgsm", n=5, random_subset=True,
                             batch_size=5, device="cpu")
    sel, ex = report["selection"], report["examples"]
    assert sel["split"] == "val" and len(sel["files_head"]) == 5
    assert ex["files"] == sel["files_head"] and all(f.startswith("val/") for f in ex["files"])
    assert [int("abc".index(f.split("/")[1])) for f in ex["files"]] == ex["labels"]
    tensors = harden.evaluate(model, _tensors(6, (3, 16, 12)), attack="fgsm", n=6, batch_size=6, device="cpu")
    assert "files" not in tensors["examples"] and "files_head" not in tensors["selection"]


def test_cli_finetunes_on_grayscale_idx_and_evaluates_a_val_split(idx_dir, mixed, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["finetune", "tests.tiny_models:tiny_cnn", "--num-classes", "3", "--input-size", "3x10x8", "--data",
            f"idx:{idx_dir}", "-o", str(out), "--epochs", "1", "--batch-size", "4", "--steps", "1",
            "--val-steps", "1", "--augment", "strong", "--quiet", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "warning: --val-n 512 is more than a third of the 12 training images: holding out 1" in result.output
    entry = harden.load(out, trust_code=True).provenance.finetune
    assert entry.data == f"idx:{idx_dir}" and entry.validation.n == 1 and entry.extras["augmentation"] == "strong"
    report = tmp_path / "r.json"
    model = harden.load_model("tests.tiny_models:tiny_cnn", num_classes=3, input_size=(3, 16, 12))
    harden.save(model, tmp_path / "rgb.safetensors")
    ev = CliRunner().invoke(main, ["evaluate", str(tmp_path / "rgb.safetensors"), "--trust-code", "--data",
                                   f"imagefolder:{mixed}", "--split", "val", "-n", "4", "--attack", "fgsm",
                                   "--batch-size", "4", "--report", str(report), "--quiet"])
    assert ev.exit_code == 0, ev.output
    assert "warning: the first 4 images of the val split" in ev.output
    assert json.loads(report.read_text())["selection"]["files_head"][0] == "val/a/0.png"
    bad = CliRunner().invoke(main, [*args[:7], f"idx:{tmp_path / 'nope'}", "-o", str(tmp_path / "b.safetensors"),
                                    *args[10:]])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "does not exist" in bad.output


def test_the_bundled_fashion_mnist_sample():
    train = load_dataset("sample:fashion-mnist", "train", image_size=(1, 28, 28))
    test = load_dataset("sample:fashion-mnist", "test", image_size=(1, 28, 28))
    assert (len(train), len(test)) == (2000, 500) and train.classes[0] == "T-shirt/top"
    assert train[0][0].shape == (1, 28, 28) and sorted(set(test.labels)) == list(range(10))
    with pytest.raises(UsageError, match="unknown sample 'fmnist'; did you mean"):
        load_dataset("sample:fmnist", "test")
