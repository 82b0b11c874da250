"""Custom trainers (import path and entry point), the export command, the event sink."""

import json
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _TRAINERS, cli, read_events, write_config

from cvtrain.config import TrainingConfig
from cvtrain.errors import ConfigError
from cvtrain.events import EventEmitter
from cvtrain.registry import resolve_trainer

PLUGINS = str(Path(__file__).parent / "plugins")


def tiny_config(datasets, out, framework, **over):
    raw = {
        "task": "classification",
        "framework": framework,
        "architecture": "tiny-8",
        "dataset": {"path": datasets["folder"], "format": "image_folder"},
        "output_dir": str(out),
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 0,
        "optimizer": "adamw",
        "learning_rate": 0.01,
        "export": ["onnx"],
    }
    raw.update(over)
    return raw


def plugin_env(*extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([_TRAINERS, PLUGINS, *extra]))


def test_custom_trainer_by_import_path(datasets, tmp_path, check_events):
    cfg = write_config(tmp_path / "run.json", **tiny_config(datasets, tmp_path / "out", "tiny_plugin:TinyCNNTrainer"))
    proc = cli("train", "--config", cfg, "--events", tmp_path / "ev.jsonl", env=plugin_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = check_events(read_events(tmp_path / "ev.jsonl"))
    assert events[0]["framework"] == "tiny_plugin:TinyCNNTrainer" and events[0]["image_size"] == 32
    assert events[-1]["type"] == "completed"
    (onnx_art,) = [e for e in events if e["type"] == "artifact" and e["kind"] == "onnx"]
    assert onnx_art["verified"] is True


def test_custom_trainer_by_entry_point(datasets, tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "tiny_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cvtrain.trainers]\ntiny = tiny_plugin:TinyCNNTrainer\nbroken = tiny_plugin:NotATrainer\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(PLUGINS)
    cfg = TrainingConfig.from_dict(tiny_config(datasets, tmp_path / "out", "tiny"))
    assert resolve_trainer(cfg).__name__ == "TinyCNNTrainer"
    with pytest.raises(ConfigError, match="not name a subclass of cvtrain.trainer.BaseTrainer"):
        resolve_trainer(TrainingConfig.from_dict(tiny_config(datasets, tmp_path / "out", "broken")))
    with pytest.raises(ConfigError, match="'task'"):
        resolve_trainer(
            TrainingConfig.from_dict(
                tiny_config(datasets, tmp_path / "o", "tiny", task="object-detection", dataset={"path": datasets["coco"], "format": "coco"})
            )
        )


def test_export_command_runs_the_graph(datasets, tmp_path, check_events):
    """export --checkpoint on a weights file; then an independent OpenCV run of the file
    against the torch model."""
    cfg = write_config(tmp_path / "run.json", **tiny_config(datasets, tmp_path / "out", "tiny_plugin:TinyCNNTrainer", export=[]))
    assert cli("train", "--config", cfg, "--events", tmp_path / "ev.jsonl", env=plugin_env()).returncode == 0
    weights = tmp_path / "out" / "weights" / "best.pt"
    out = tmp_path / "m.onnx"
    proc = cli("export", "--checkpoint", weights, "--format", "onnx", "--out", out, "--events", tmp_path / "x.jsonl", env=plugin_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    (event,) = check_events(read_events(tmp_path / "x.jsonl"))
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == event
    assert event["verified"] is True and event["path"] == str(out) and event["size_bytes"] == out.stat().st_size

    import cv2

    sys.path.insert(0, PLUGINS)
    try:
        from tiny_plugin import TinyCNNTrainer
    finally:
        sys.path.remove(PLUGINS)
    state = torch.load(weights)
    trainer = TinyCNNTrainer(TrainingConfig.from_dict(state["config"], check_paths=False))
    trainer.load_for_export(state)
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor(trainer.mean).view(1, 3, 1, 1)
    std = torch.tensor(trainer.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = trainer.model((x - mean) / std).numpy()
    net = cv2.dnn.readNetFromONNX(str(out))
    net.setInput(x.numpy())
    got = net.forward()
    assert got.shape == (3, 3)
    assert np.abs(got - expected).max() < 1e-4


def test_export_command_errors(tmp_path):
    proc = cli("export", "--checkpoint", tmp_path / "none.pt", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert proc.returncode == 2 and "'--checkpoint'" in proc.stderr
    torch.save({"hello": 1}, tmp_path / "other.pt")
    proc = cli("export", "--checkpoint", tmp_path / "other.pt", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert proc.returncode == 2 and "not a cvtrain checkpoint" in proc.stderr


def test_event_sink_on_a_file_descriptor(check_events):
    read_fd, write_fd = os.pipe()
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(os.fdopen(read_fd, encoding="utf-8")))
    reader.start()
    emitter = EventEmitter(f"fd:{write_fd}", session="s1")
    emitter.emit("warning", code="c", message="m", count=1)
    emitter.emit("progress", epoch=1, step=1, steps_per_epoch=2, fraction=0.25, loss=float("nan"), images_per_sec=1.0, lr=0.1)
    emitter.close()
    os.close(write_fd)
    reader.join(timeout=5)
    events = [json.loads(line) for line in lines]
    check_events(events[:1])
    assert [e["type"] for e in events] == ["warning", "progress"]
    assert all(e["v"] == 1 and e["session"] == "s1" for e in events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in events)
    # JSON has no NaN: a non-finite number is written as null rather than an unparseable line.
    assert events[1]["loss"] is None and "NaN" not in lines[1]


def test_cli_rejects_a_closed_descriptor(datasets, tmp_path):
    cfg = write_config(tmp_path / "run.json", **tiny_config(datasets, tmp_path / "out", "torchvision", architecture="resnet18"))
    proc = cli("train", "--config", cfg, "--events", "fd:97")
    assert proc.returncode == 2 and "'--events'" in proc.stderr


def test_train_over_fd3_like_the_gpu_node(datasets, tmp_path, check_events):
    """gpu-node passes a pipe as descriptor 3 and reads events from it."""
    import subprocess

    cfg = write_config(tmp_path / "run.json", **tiny_config(datasets, tmp_path / "out", "tiny_plugin:TinyCNNTrainer", epochs=1, export=[]))
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import os, sys; os.dup2({write_fd}, 3); os.execv(sys.executable, [sys.executable, '-m', 'cvtrain', 'train', '--config', {str(cfg)!r}, '--events', 'fd:3'])"],
        env=plugin_env(),
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as fh:
        lines = fh.readlines()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    events = check_events([json.loads(line) for line in lines])
    assert events[0]["type"] == "started" and events[-1]["type"] == "completed"
    assert not (tmp_path / "out" / "events.jsonl").exists(), "with fd:3 no events file is written"


def sigterm_is_caught(pid):
    with open(f"/proc/{pid}/status") as fh:
        caught = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    return bool(caught & (1 << (15 - 1)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc to see when the handler is installed")
def test_sigterm_during_start_up_still_stops_cleanly(datasets, tmp_path, check_events):
    """A stop request while torch is still importing must not kill the run without an
    event: it stops at the first step boundary with a resumable checkpoint."""
    import subprocess
    import time

    events_path = tmp_path / "ev.jsonl"
    cfg = write_config(tmp_path / "run.json", **tiny_config(datasets, tmp_path / "out", "tiny_plugin:TinyCNNTrainer", epochs=1, export=[]))
    env = dict(plugin_env(), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvtrain", "train", "--config", cfg, "--events", events_path],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not sigterm_is_caught(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.terminate()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
    assert "received during start-up" in proc.stderr.read()
    events = check_events(read_events(events_path))
    assert [e["type"] for e in events] == ["started", "checkpoint", "stopped"]
    assert (events[-1]["epoch"], events[-1]["step"]) == (0, 0)
    resume = write_config(tmp_path / "resume.json", **tiny_config(datasets, tmp_path / "out", "tiny_plugin:TinyCNNTrainer", epochs=1, export=[], resume_from="last"))
    assert cli("train", "--config", resume, "--events", events_path, env=plugin_env()).returncode == 0
    assert read_events(events_path)[-1]["type"] == "completed"


def _tied_detections():
    """A detector's outputs with two pairs of equal scores, as an untrained model gives."""
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40], [1, 2, 3, 4], [8, 8, 9, 9]], dtype=np.float32)
    scores = np.array([0.9, 0.25, 0.25, 0.1, 0.1], dtype=np.float32)
    labels = np.array([0, 1, 1, 2, 2], dtype=np.int64)
    return [boxes, scores, labels]


def test_detector_verification_accepts_tied_detections_in_another_order(monkeypatch, tmp_path):
    from cvtrain import export

    reference = _tied_detections()
    swap = [0, 2, 1, 4, 3]  # what onnxruntime gave for the test detector: tied pairs swapped
    runtime_out = [a[swap] for a in reference]
    monkeypatch.setattr(export, "run_onnx", lambda path, feeds, outputs: (runtime_out, "fake-runtime 1.0", []))
    info = export._verify(str(tmp_path / "m.onnx"), {"images": np.zeros((1, 3, 4, 4), np.float32)}, ["boxes", "scores", "labels"], reference, None, False, detections=True)
    assert info["verified"] is True and info["max_abs_diff"] == 0.0 and info["note"] is None

    # Without the detector flag (a classifier's outputs) order matters.
    info = export._verify(str(tmp_path / "m.onnx"), {"images": np.zeros((1, 3, 4, 4), np.float32)}, ["boxes", "scores", "labels"], reference, None, False)
    assert info["verified"] is False


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o[0].__setitem__((1, 0), o[0][1, 0] + 3.0),  # a box really differs
        lambda o: o[2].__setitem__(2, 0),  # a label differs
        lambda o: o[1].__setitem__(1, 0.5),  # a score differs
    ],
)
def test_detector_verification_still_fails_on_real_differences(monkeypatch, tmp_path, change):
    from cvtrain import export

    reference = _tied_detections()
    runtime_out = [a[[0, 2, 1, 4, 3]].copy() for a in reference]
    change(runtime_out)
    monkeypatch.setattr(export, "run_onnx", lambda path, feeds, outputs: (runtime_out, "fake-runtime 1.0", []))
    info = export._verify(str(tmp_path / "m.onnx"), {"images": np.zeros((1, 3, 4, 4), np.float32)}, ["boxes", "scores", "labels"], reference, None, False, detections=True)
    assert info["verified"] is False and info["note"]
