"""Data specs: the bundled sample, ImageFolder trees with or without splits, CIFAR roots, selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from harden.data import CIFAR10_CLASSES, DataWarning, check_spec, load_dataset, load_tensors, select
from harden.errors import UsageError


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/train/{cat,dog}/ and ROOT/test/{cat,dog}/ with small images of two sizes."""
    root = tmp_path_factory.mktemp("folder")
    for split, count in (("train", 3), ("test", 2)):
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                size = (40, 30) if i == 0 else (32, 32)
                Image.new("RGB", size, (255 * label, 10 * i, 0)).save(root / split / cls / f"{i}.png")
    (root / "test" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_sample_splits_and_labels():
    test = load_dataset("sample", "test")
    train = load_dataset("sample", "train")
    assert (len(test), len(train)) == (1000, 2000)
    assert test.classes == list(CIFAR10_CLASSES) and test.num_classes == 10
    assert sorted(set(test.labels)) == list(range(10)) and test.labels.count(3) == 100
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y == test.labels[0]


def test_imagefolder_splits(tree):
    test = load_dataset(f"imagefolder:{tree}", "test", image_size=32)
    train = load_dataset(f"imagefolder:{tree}", "train", image_size=32)
    assert (len(test), len(train)) == (4, 6)  # the .txt file is skipped
    assert test.classes == ["cat", "dog"] and test.labels == [0, 0, 1, 1]
    x, _ = test[0]  # a 40x30 image: short side resized, centre-cropped
    assert x.shape == (3, 32, 32)
    dog, label = test[2]
    assert label == 1 and float(dog[0].mean()) == pytest.approx(1.0)
    assert test.describe()["split"] == "test"


def test_imagefolder_without_splits(tree):
    with pytest.warns(DataWarning, match="has no split folders"):
        flat = load_dataset(f"imagefolder:{tree / 'train'}", "test")
    assert len(flat) == 6 and flat.classes == ["cat", "dog"]


@pytest.mark.parametrize("spec, split, needle", [
    ("imagefolder:{root}/nope", "test", "does not exist"),
    ("imagefolder", "test", "needs a root folder"),
    ("cifar10:{root}/nope", "test", "pass --download"),
    ("cifar100:{root}/nope", "test", "pass --download"),
    ("imagenet:{root}", "test", "unknown data source"),
    ("sample", "val", "split must be one of"),
    ("cifar10:{root}", "val", "split must be one of train, test for cifar10 data"),
    ("imagefolder:{root}", "a/b", "split must be a name such as train, val or test"),
    ("idx:{root}/nope", "test", "does not exist"),
    ("npz", "test", "needs a file: npz:FILE"),
    ("npz:{root}/nope.npz", "test", "data file .* does not exist"),
])
def test_bad_specs(tree, spec, split, needle):
    spec = spec.format(root=tree)
    with pytest.raises(UsageError, match=needle):
        check_spec(spec, split)
    with pytest.raises(UsageError, match=needle):
        load_dataset(spec, split)


def test_missing_split_and_empty_split(tree, tmp_path):
    only_test = tmp_path / "only"
    (only_test / "test" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(only_test / "test" / "a" / "0.png")
    with pytest.raises(UsageError, match="no 'train' split"):
        load_dataset(f"imagefolder:{only_test}", "train")
    empty = tmp_path / "empty"
    (empty / "test" / "a").mkdir(parents=True)
    with pytest.raises(UsageError, match="class folder '.*a' holds no images; remove it or add images"):
        load_dataset(f"imagefolder:{empty}", "test")
    (tmp_path / "noclass" / "test").mkdir(parents=True)
    with pytest.raises(UsageError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'noclass'}", "test")


def test_selection_first_and_random(tree):
    ds = load_dataset("sample", "test")
    with pytest.warns(DataWarning, match="hold 1 of its 10 classes"):  # the sample is stored class by class
        first = select(ds, 5)
    assert first.indices == [0, 1, 2, 3, 4] and first.mode == "first"
    assert "files_head" not in first.describe()  # the bundled sample's reports stay as they were
    a, b = select(ds, 5, random_subset=True, seed=1), select(ds, 5, random_subset=True, seed=1)
    c = select(ds, 5, random_subset=True, seed=2)
    assert a.indices == b.indices != c.indices and len(set(a.indices)) == 5
    assert a.describe()["selection_seed"] == 1 and a.describe()["indices_head"] == a.indices
    assert select(ds, 10_000).n == 1000 and select(ds, None).n == 1000
    with pytest.raises(UsageError):
        select(ds, 0)
    x, y = load_tensors(ds, a)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [ds.labels[i] for i in a.indices]
