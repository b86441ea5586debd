"""The run layer (harden.runtime): session, store, atomic writer, stamps, events and modes."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as tdist
from torch import nn

from harden import tracking
from harden.errors import HardenError, UsageError
from harden.evaluation import progress_store
from harden.evaluation.honesty_checks import WarningLog
from harden.evaluation.progress import Progress
from harden.runtime import distributed as hd
from harden.runtime import events as ev
from harden.runtime.atomic import atomic_path, save_figure, write_text
from harden.runtime.modes import eval_mode, modes_kept
from harden.runtime.session import DistSession, session
from harden.runtime.stamp import REPORT_LIBRARIES, device_text, versions
from harden.runtime.store import Store, checkpoint_path_for, differences, state_digest
from harden.training import checkpoint_store
from harden.training.checkpoint import fingerprint_diff


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.1), nn.Flatten(), nn.LazyLinear(2))


# ------------------------------------------------------------------------------------------- store


def test_digests_are_those_files_already_record() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    full, short = hashlib.sha256(), hashlib.sha256()
    for name, t in net.state_dict().items():
        t = t.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        full.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode() + raw)
        short.update(name.encode() + f"{t.dtype}{tuple(t.shape)}".encode() + raw)
    assert state_digest(net) == full.hexdigest()  # fine-tuning checkpoints and teacher digests
    assert state_digest(net, short=True) == short.hexdigest()[:16]  # evaluation progress files


def test_differences_name_every_changed_key() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1]}, "gone": 0}
    new = {"a": 1, "b": {"c": 3, "d": [1]}, "added": 5}
    assert differences(old, new) == [("b.c", 2, 3), ("gone", 0, None), ("added", None, 5)]
    assert differences(old, new, depth=1)[0] == ("b", old["b"], new["b"])
    assert differences(1, 2) == [("", 1, 2)] and differences(old, old) == []


def test_a_changed_fingerprint_is_described_as_before() -> None:
    saved = {"config": {"lr": 0.01, "epochs": 2}, "data": "sample", "weights": "aa", "recipe": {"x": 1}}
    current = {"config": {"lr": 0.02, "epochs": 2}, "data": "cifar10:/d", "weights": "bb", "recipe": {"x": 1}}
    assert fingerprint_diff(saved, current) == ["lr (0.01 -> 0.02)", "data ('sample' -> 'cifar10:/d')",
                                                 "starting weights"]
    assert fingerprint_diff(saved, saved) == []


def test_progress_of_another_run_is_refused_with_the_same_message(tmp_path: Path) -> None:
    store = progress_store(tmp_path / "r.json")
    assert store.path == tmp_path / "r.json.progress"
    Progress(store, {"eps": 0.03, "n": 8}, 4, torch.zeros(8, dtype=torch.long), stage_seconds=[0.5]).save(
        WarningLog(), 1.0)
    with pytest.raises(UsageError, match=r"belongs to another run \(eps was 0.03, now 0.02\); delete it"):
        Progress.load(store, {"eps": 0.02, "n": 8}, None)
    assert Progress.load(store, {"eps": 0.03, "n": 8}, None).resumed  # type: ignore[union-attr]


def test_store_round_trips_and_refuses_foreign_or_damaged_files(tmp_path: Path) -> None:
    ckpt = checkpoint_store(checkpoint_path_for(tmp_path / "m.safetensors"))
    assert ckpt.path == tmp_path / "m.ckpt.pt" and ckpt.load() is None
    ckpt.save({"format": "harden.checkpoint/1", "w": torch.ones(2)})
    assert torch.equal(ckpt.load()["w"], torch.ones(2))  # type: ignore[index]
    torch.save({"format": "other"}, ckpt.path)
    with pytest.raises(HardenError, match="is not a harden fine-tuning checkpoint"):
        ckpt.load()
    ckpt.path.write_bytes(b"not a torch file")
    with pytest.raises(HardenError, match="could not be read .*it may be damaged: start over with --force"):
        ckpt.load()
    plain = Store(tmp_path / "s.json", indent=2, unreadable="'{path}' is damaged ({reason})")
    plain.save({"a": [1, 2]})
    assert plain.path.read_text().endswith("\n") and plain.load() == {"a": [1, 2]}
    plain.path.write_text("{")
    with pytest.raises(HardenError, match="s.json' is damaged"):
        plain.load()
    plain.remove()
    assert not plain.exists()


# ------------------------------------------------------------------------------------------ atomic


def test_atomic_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(UsageError, match="exists; pass --force"), atomic_path(target, overwrite=False):
        pass


def test_atomic_writes_get_an_ordinary_files_mode(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: what the umask allows for a new file, the old mode for a replaced one."""
    old = os.umask(0o027)
    try:
        fresh = write_text(tmp_path / "new.json", "{}")
        assert fresh.stat().st_mode & 0o777 == 0o640
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o604)
        write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o604 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_save_figure_writes_a_png_atomically(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------------------------------------- stamp


def test_versions_and_device_text() -> None:
    stamp = versions()
    assert {"harden", "torch", "timm", "torchvision"} <= set(stamp) and "python" not in stamp
    report = versions(REPORT_LIBRARIES, python=True)
    assert list(report)[:3] == ["harden", "torch", "pyautoattack"] and "python" in report
    cpu = torch.device("cpu")
    assert device_text(cpu, detail=False) == "cpu" and device_text(cpu).startswith("cpu (")


# ------------------------------------------------------------------------------------------ events


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def handle(self, event: ev.Event) -> None:
        self.calls.append(("event", event))

    def params(self, values: Any) -> None:
        self.calls.append(("params", dict(values)))

    def metrics(self, values: Any, step: int | None = None) -> None:
        self.calls.append(("metrics", (dict(values), step)))

    def artifact(self, path: Any) -> None:
        self.calls.append(("artifact", Path(path).name))

    def close(self, failed: bool = False) -> None:
        pass


def test_events_reach_every_sink_in_order(tmp_path: Path) -> None:
    first, second, tracker = _Recorder(), _Recorder(), _Recorder()
    epochs: list[dict[str, Any]] = []
    events = ev.Events(first, None, ev.Callbacks(on_epoch=epochs.append), tracking.TrackerSink(tracker), second)
    entry = {"epoch": 2, "loss": 0.5, "val_clean": 50.0, "stopped": False}
    for event in (ev.Record("settings", {"lr": 0.1}), ev.Record("epoch", entry),
                  ev.Record("figures", {"kept_robust_acc": 40.0})):
        events.emit(event)
    assert [e for _, e in first.calls] == [e for _, e in second.calls] and len(first.calls) == 3
    assert epochs == [entry]
    assert tracker.calls == [("params", {"lr": 0.1}), ("metrics", ({"loss": 0.5, "val_clean": 50.0}, 2)),
                             ("metrics", ({"kept_robust_acc": 40.0}, None))]


def test_report_goes_to_the_json_file_and_the_tracker(tmp_path: Path) -> None:
    tracker = _Recorder()
    report = json.loads((Path(__file__).parent / "fixtures" / "reports" / "pgd.json").read_text())
    path = tmp_path / "r.json"
    events = ev.Events(ev.ReportFile(path), tracking.TrackerSink(tracker))
    events.emit(ev.Record("report", report))
    events.emit(ev.ArtifactWritten(path))
    events.emit(ev.ArtifactWritten(tmp_path / "missing.png"))
    events.emit(ev.ArtifactWritten(None))
    assert json.loads(path.read_text()) == report and path.read_text().endswith("\n")
    params = tracker.calls[0][1]["evaluate"]
    assert params["model"] == "cifar:wrn-10-1" and params["attack"] == "pgd" and params["n"] == 16
    metrics = tracker.calls[1][1][0]
    assert metrics["robust_acc"] == report["robust_acc"] and metrics["clean_ci95_low"] == report["clean_ci95"][0]
    assert tracker.calls[2:] == [("artifact", "r.json")]
    with pytest.raises(ValueError, match="unknown record kind 'epochs'"):
        ev.Record("epochs", {})


def test_terminal_draws_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    events = ev.Events(ev.Terminal())
    events.emit(ev.ProgressStarted(4, "epoch 1/1", unit="batch", keep=True))
    events.emit(ev.ProgressMade(2, status={"loss": "0.5"}))
    events.emit(ev.ProgressMade(2, label="apgd-ce", status="acc 50.00%"))
    events.emit(ev.ProgressEnded())
    err = capsys.readouterr().err
    assert "apgd-ce" in err and "4/4" in err and "acc 50.00%" in err


# ----------------------------------------------------------------------------------------- session


def _one_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hd, "env_world_size", lambda: 2)  # as under torchrun, so the session joins


def test_session_outside_torchrun_is_rank_0_of_1() -> None:
    with session("cpu") as dist:
        assert (dist.rank, dist.world, dist.is_main, dist.active, dist.owns_group) == (0, 1, True, False, False)
        assert dist.device == torch.device("cpu")
        t = torch.ones(2)
        assert dist.all_sum(t) is t
        dist.barrier()
    assert DistSession().device == torch.device("cpu")


def test_session_leaves_the_group_it_joined_even_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _one_process_env(monkeypatch)
    with pytest.raises(RuntimeError, match="boom"), session("cpu") as dist:
        assert dist.owns_group and tdist.is_initialized()
        raise RuntimeError("boom")
    assert not tdist.is_initialized()


def test_nested_session_leaves_the_outer_group_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    _one_process_env(monkeypatch)
    with session("cpu") as outer:
        with session("cpu") as inner:
            assert not inner.owns_group
        assert tdist.is_initialized() and outer.owns_group
    assert not tdist.is_initialized()


# ------------------------------------------------------------------------------------------- modes


def test_modes_come_back_after_the_block_even_on_error() -> None:
    net = _net()
    net.train()
    net[1].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError), eval_mode(net):
        assert not any(m.training for m in net.modules())
        raise RuntimeError
    assert [m.training for m in net.modules()] == before
    with modes_kept(net):
        net.train()
    assert [m.training for m in net.modules()] == before
