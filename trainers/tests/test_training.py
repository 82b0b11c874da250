"""Real training on generated datasets (CPU), graceful stop and exact resume."""

import math
import os
import signal
import time

import pytest
import torch
from conftest import cli, cli_popen, read_events, write_config

from cvtrain import compat
from cvtrain.config import TrainingConfig
from cvtrain.events import EventEmitter
from cvtrain.registry import resolve_trainer


def by_type(events, kind):
    return [e for e in events if e["type"] == kind]


def assert_same_metrics(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert math.isclose(a[k], b[k], rel_tol=0, abs_tol=1e-6), (k, a[k], b[k])


def assert_same_weights(path_a, path_b):
    a, b = compat.load(path_a)["model"], compat.load(path_b)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- detection through the CLI -----------------------------------------------------------


def detection_config(datasets, out, **over):
    cfg = {
        "task": "object-detection",
        "framework": "torchvision",
        "architecture": "ssdlite320_mobilenet_v3_large",
        "dataset": {"path": datasets["coco"], "format": "coco"},
        "output_dir": str(out),
        "epochs": 3,
        "batch_size": 4,
        "image_size": 64,
        "optimizer": "adamw",
        "learning_rate": 0.001,
        "warmup_epochs": 0.5,
        "num_workers": 1,
        "progress_interval_s": 0,
        "seed": 3,
        "session_id": "det-session",
        "export": [],
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def detection_run(datasets, tmp_path_factory):
    """An uninterrupted detector run: the reference for the resume test."""
    root = tmp_path_factory.mktemp("det")
    cfg = write_config(root / "run.json", **detection_config(datasets, root / "out", export=["onnx"], keep_periodic=True))
    proc = cli("train", "--config", cfg, "--events", root / "events.jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, read_events(root / "events.jsonl")


def test_detector_trains_on_cpu(detection_run, check_events):
    root, events = detection_run
    check_events(events)
    assert [e["type"] for e in events][0] == "started"
    assert events[-1]["type"] == "completed"
    assert all(e["session"] == "det-session" for e in events)
    started = events[0]
    assert started["train_images"] == 30 and started["val_images"] == 10 and started["steps_per_epoch"] == 7
    assert started["num_workers"] == 1 and started["resumed_from"] is None
    epochs = by_type(events, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    # It learns: the loss falls clearly over three short epochs.
    assert epochs[-1]["train_loss"] < 0.95 * epochs[0]["train_loss"]
    assert set(epochs[0]["losses"]) == {"bbox_regression", "classification"}
    for name in ("mAP", "mAP50", "mAP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert -1 <= epochs[-1]["metrics"][name] <= 1
    assert by_type(events, "progress"), "progress events missing"
    done = events[-1]
    assert done["epochs"] == 3 and done["best_metric_name"] == "mAP"
    assert done["metrics"] == epochs[-1]["metrics"]
    kinds = {(c["kind"], c["epoch"]) for c in by_type(events, "checkpoint")}
    assert {("last", 1), ("last", 2), ("last", 3), ("periodic", 1), ("periodic", 2), ("periodic", 3)} <= kinds
    artifacts = {a["kind"]: a for a in by_type(events, "artifact")}
    assert set(artifacts) == {"checkpoint", "metrics", "weights", "onnx"}
    for a in artifacts.values():
        assert os.path.getsize(a["path"]) == a["size_bytes"]


def test_detector_onnx_export_is_checked(detection_run):
    import onnx

    _, events = detection_run
    (art,) = [a for a in by_type(events, "artifact") if a["kind"] == "onnx"]
    onnx.checker.check_model(onnx.load(art["path"]))
    if art["verified"]:
        assert art["runtime"] and art["max_abs_diff"] is not None
    else:
        # Nothing here can run detection post-processing graphs (no onnxruntime, OpenCV's
        # importer lacks their ops): the artifact must say so instead of claiming success.
        assert art["runtime"] is None and art["max_abs_diff"] is None, art
        assert "onnxruntime" in art["note"] and "opencv" in art["note"]


# What torch >= 2.4's restricted unpickler (torch.load(weights_only=True), its default
# from 2.6) accepts among the globals a state dict needs.
SAFE_GLOBALS = {
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    *(f"torch {t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")),
}


def pickle_globals(path):
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith("data.pkl")]
        data = z.read(name)
    found = set()
    for op, arg, _ in pickletools.genops(data):
        assert op.name not in ("STACK_GLOBAL", "INST", "OBJ"), f"unexpected opcode {op.name} in {path}"
        if op.name == "GLOBAL":
            found.add(arg)
    return found


def test_checkpoints_are_atomic_and_load_without_unpickling_code(detection_run):
    """Checkpoints and weights hold only tensors and plain containers, so the GPU
    machine's torch (weights_only=True by default) reads them; no temp files remain."""
    root, events = detection_run
    ckpt_dir = root / "out" / "checkpoints"
    assert not [p for p in os.listdir(ckpt_dir) if ".tmp." in p]
    paths = [c["path"] for c in by_type(events, "checkpoint")] + [a["path"] for a in by_type(events, "artifact") if a["kind"] == "weights"]
    for path in set(paths):
        assert pickle_globals(path) <= SAFE_GLOBALS, path
    import hashlib

    last = by_type(events, "checkpoint")[-1]
    assert hashlib.sha256(open(last["path"], "rb").read()).hexdigest() == last["sha256"]


def wait_for(predicate, path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            events = read_events(path)
            if predicate(events):
                return events
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting on {path}")


def test_sigterm_then_resume_equals_uninterrupted(detection_run, datasets, tmp_path, check_events):
    ref_root, ref_events = detection_run
    out = tmp_path / "out"
    events_path = tmp_path / "events.jsonl"
    cfg = write_config(tmp_path / "run.json", **detection_config(datasets, out))
    proc = cli_popen("train", "--config", cfg, "--events", events_path, stdout=open(tmp_path / "log", "w"), stderr=open(tmp_path / "err", "w"))
    try:
        wait_for(lambda ev: any(e["type"] == "progress" and e["epoch"] == 2 and e["step"] >= 2 for e in ev), events_path, 120)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, open(tmp_path / "err").read()[-3000:]
        assert time.monotonic() - sent < 10, "graceful stop must finish within seconds"
    finally:
        if proc.poll() is None:
            proc.kill()
    events = check_events(read_events(events_path))
    stopped = events[-1]
    assert stopped["type"] == "stopped" and stopped["resumable"] is True and stopped["reason"] == "signal:SIGTERM"
    assert stopped["epoch"] == 1 and 2 <= stopped["step"] < 7, "expected a mid-epoch stop"
    ckpt = by_type(events, "checkpoint")[-1]
    assert ckpt["kind"] == "stop" and ckpt["path"] == stopped["checkpoint"] and ckpt["step"] == stopped["step"]

    resumed_cfg = write_config(tmp_path / "resume.json", **detection_config(datasets, out, resume_from=stopped["checkpoint"]))
    proc = cli("train", "--config", resumed_cfg, "--events", events_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = check_events(read_events(events_path))
    restarted = by_type(events, "started")[-1]
    assert restarted["start_epoch"] == 1 and restarted["start_step"] == stopped["step"]
    assert restarted["resumed_from"] == stopped["checkpoint"]
    # Same losses epoch by epoch and the same final metrics and weights as the run that
    # was never interrupted.
    ref_epochs = {e["epoch"]: e for e in by_type(ref_events, "epoch")}
    for e in by_type(events, "epoch"):
        assert math.isclose(e["train_loss"], ref_epochs[e["epoch"]]["train_loss"], abs_tol=1e-6)
        assert_same_metrics(e["metrics"], ref_epochs[e["epoch"]]["metrics"])
    assert_same_metrics(events[-1]["metrics"], ref_events[-1]["metrics"])
    assert_same_weights(out / "checkpoints" / "last.pt", ref_root / "out" / "checkpoints" / "last.pt")


# --- classification ------------------------------------------------------------------------


def test_classifier_trains_on_cpu_and_exports_verified_onnx(datasets, tmp_path, check_events):
    cfg = {
        "task": "classification",
        "architecture": "resnet18",
        "dataset": {"path": datasets["folder"], "format": "image_folder"},
        "output_dir": str(tmp_path / "out"),
        "epochs": 4,
        "batch_size": 8,
        "image_size": 48,
        "optimizer": "adamw",
        "learning_rate": 0.001,
        "warmup_epochs": 0.5,
        "num_workers": 0,
        "export": ["onnx"],
    }
    proc = cli("train", "--config", write_config(tmp_path / "run.json", **cfg), "--events", tmp_path / "ev.jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = check_events(read_events(tmp_path / "ev.jsonl"))
    epochs = by_type(events, "epoch")
    assert len(epochs) == 4 and set(epochs[0]["metrics"]) == {"top1", "top5", "val_loss"}
    # Three balanced classes: chance is 1/3; the classifier must be well above it.
    assert events[-1]["metrics"]["top1"] > 0.5
    assert events[-1]["best_metric_name"] == "top1"
    (onnx_art,) = [a for a in by_type(events, "artifact") if a["kind"] == "onnx"]
    assert onnx_art["verified"] is True, onnx_art
    assert onnx_art["dynamic_batch"] is True and onnx_art["max_abs_diff"] < 1e-3
    import json

    with open(tmp_path / "out" / "metrics.json") as fh:
        metrics = json.load(fh)
    assert len(metrics["details"]["confusion_matrix"]) == 3 and len(metrics["history"]) == 4


def classifier_config(datasets, out, **over):
    # mobilenet_v3_small has dropout, so a resume that failed to restore the global RNG
    # state would draw different masks and diverge.
    raw = {
        "task": "classification",
        "architecture": "mobilenet_v3_small",
        "dataset": {"path": datasets["folder"], "format": "image_folder"},
        "output_dir": str(out),
        "epochs": 3,
        "batch_size": 4,
        "image_size": 32,
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "num_workers": 0,
        "max_batches_per_epoch": 4,
        "max_val_batches": 3,
        "keep_periodic": True,
        "export": [],
        "seed": 5,
    }
    raw.update(over)
    return TrainingConfig.from_dict(raw)


def fit(cfg, kill_at=None):
    """In-process run; `kill_at=(hook, epoch, step)` sends this process a real SIGTERM
    from inside that hook, so the stop lands at an exact, known position."""
    events = EventEmitter(None, keep=True)
    trainer = resolve_trainer(cfg)(cfg, events)
    if kill_at:
        hook, epoch, step = kill_at

        def kill(t):
            if (t.epoch, t.step) == (epoch, step) and not t.stop_requested:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer.add_callback(hook, kill)
    result = trainer.fit()
    return result, events.events


@pytest.fixture(scope="module")
def classifier_reference(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls_ref")
    result, events = fit(classifier_config(datasets, out))
    assert result.status == "completed", result.error
    return out, events


@pytest.mark.parametrize(
    "kill_at,position",
    [
        (("on_train_batch_end", 1, 2), (1, 2)),  # mid-epoch
        (("on_val_batch_start", 0, 4), (0, 4)),  # during validation: the epoch's training is kept
        (("on_fit_epoch_end", 1, 4), (2, 0)),  # after an epoch ended
    ],
)
def test_stop_anywhere_then_resume_is_exact(datasets, tmp_path, classifier_reference, check_events, kill_at, position):
    ref_out, ref_events = classifier_reference
    previous = signal.getsignal(signal.SIGTERM)
    result, events = fit(classifier_config(datasets, tmp_path), kill_at=kill_at)
    assert signal.getsignal(signal.SIGTERM) == previous, "handlers must be restored"
    assert result.status == "stopped" and result.exit_code == 0
    stopped = check_events(events)[-1]
    assert stopped["type"] == "stopped" and (stopped["epoch"], stopped["step"]) == position
    result, events = fit(classifier_config(datasets, tmp_path, resume_from="last"))
    assert result.status == "completed", result.error
    check_events(events)
    assert events[0]["resumed_from"] == stopped["checkpoint"]
    assert_same_metrics(events[-1]["metrics"], ref_events[-1]["metrics"])
    assert_same_weights(tmp_path / "checkpoints" / "last.pt", ref_out / "checkpoints" / "last.pt")


def test_resume_from_periodic_checkpoint_is_exact(datasets, tmp_path, classifier_reference, check_events):
    ref_out, ref_events = classifier_reference
    periodic = ref_out / "checkpoints" / "epoch_0001.pt"
    result, events = fit(classifier_config(datasets, tmp_path, resume_from=str(periodic)))
    assert result.status == "completed", result.error
    check_events(events)
    assert [e["epoch"] for e in by_type(events, "epoch")] == [2, 3]
    assert_same_metrics(events[-1]["metrics"], ref_events[-1]["metrics"])
    assert_same_weights(tmp_path / "checkpoints" / "last.pt", ref_out / "checkpoints" / "last.pt")


def test_resume_refuses_a_different_run(datasets, tmp_path, classifier_reference):
    ref_out, _ = classifier_reference
    cfg = classifier_config(datasets, tmp_path, batch_size=8, resume_from=str(ref_out / "checkpoints" / "last.pt"))
    result, events = fit(cfg)
    assert result.exit_code == 2
    assert "batch_size" in events[-1]["message"] and events[-1]["error_type"] == "ConfigError"


def test_early_stopping(datasets, tmp_path, check_events):
    # With a negligible learning rate only BatchNorm statistics move, so top1 soon stops
    # improving; patience 1 must then end the run at the first epoch without a new best.
    cfg = classifier_config(datasets, tmp_path, epochs=6, early_stopping_patience=1, learning_rate=1e-9, keep_periodic=False)
    result, events = fit(cfg)
    assert result.status == "completed"
    check_events(events)
    flags = [e["is_best"] for e in by_type(events, "epoch")]
    assert flags[0] is True and flags[-1] is False and all(flags[:-1]), flags
    done = events[-1]
    assert done["early_stopped"] is True and done["epochs"] == len(flags) < 6
    assert by_type(events, "checkpoint")[-1]["kind"] == "last", "an early stop still leaves last.pt"


def test_data_wait_fraction_tells_input_bound_from_compute_bound(datasets, tmp_path, monkeypatch, check_events):
    """The same short run twice: once with a slow dataset (every sample takes 100 ms to load,
    400 ms a batch), once with a slow step (a 100 ms hook before every batch) and normal loading.
    Loading sleeps rather than computes, so the input-bound run stays input-bound when other
    processes slow the training step down (at 50 ms a sample it read 0.56-0.60 on a loaded host)."""
    from cvtrain.datasets.loading import ClassificationDataset

    def run(name, slow_step):
        cfg = classifier_config(datasets, tmp_path / name, epochs=1, progress_interval_s=0, max_val_batches=1, keep_periodic=False)
        events = EventEmitter(None, keep=True)
        trainer = resolve_trainer(cfg)(cfg, events)
        if slow_step:
            trainer.add_callback("on_train_batch_start", lambda t: time.sleep(0.1))
        assert trainer.fit().status == "completed"
        return check_events(events.events)

    compute_bound = run("compute", slow_step=True)
    load = ClassificationDataset.__getitem__

    def slow_load(self, index):
        time.sleep(0.1)
        return load(self, index)

    monkeypatch.setattr(ClassificationDataset, "__getitem__", slow_load)
    input_bound = run("input", slow_step=False)

    for events, low, high in ((compute_bound, 0.0, 0.3), (input_bound, 0.6, 1.0)):
        (epoch,) = by_type(events, "epoch")
        assert low <= epoch["data_wait_fraction"] <= high, epoch
        progress = by_type(events, "progress")
        assert progress and all(low <= p["data_wait_fraction"] <= high for p in progress), progress


def test_next_epoch_loads_while_this_one_ends(datasets, tmp_path, monkeypatch, check_events):
    """With workers, epoch N+1's first batches are decoded during epoch N's last steps and its
    validation, so a slow-loading run does not start every epoch waiting. The same run with
    that switched off (a fresh iterator per epoch) shows the wait it removes."""
    from cvtrain.datasets.loading import ClassificationDataset
    from cvtrain.trainer import BaseTrainer

    load = ClassificationDataset.__getitem__

    def slow_load(self, index):
        time.sleep(0.05)  # 200 ms a batch of 4, in the worker process
        return load(self, index)

    monkeypatch.setattr(ClassificationDataset, "__getitem__", slow_load)

    def run(name):
        cfg = classifier_config(
            datasets, tmp_path / name, epochs=2, num_workers=1, max_batches_per_epoch=2, max_val_batches=1, keep_periodic=False
        )
        events = EventEmitter(None, keep=True)
        trainer = resolve_trainer(cfg)(cfg, events)
        trainer.add_callback("on_val_end", lambda t: time.sleep(1.0))  # a long validation
        assert trainer.fit().status == "completed"
        return [e["data_wait_fraction"] for e in by_type(check_events(events.events), "epoch")]

    first, second = run("ahead")
    assert first > 0.5, first  # epoch 1 waits for the workers to start and decode
    assert second < 0.2, second  # epoch 2's two batches were ready when it began

    monkeypatch.setattr(BaseTrainer, "load_across_epochs", False)
    _, second_without = run("not_ahead")
    assert second_without > 0.5, second_without
