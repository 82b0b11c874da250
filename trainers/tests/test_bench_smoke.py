"""The GPU benchmark script's CPU smoke mode runs end to end (the full mode needs CUDA)."""

import json
import subprocess
import sys

import pytest

from conftest import _TRAINERS


def test_gpu_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, f"{_TRAINERS}/bench/gpu_bench.py", "--smoke", "--models", "resnet18", "--variant", "resnet18:num_workers=0", "--variant", "resnet18:env.CVTRAIN_BATCH_RING=0", "--out", out, "--workdir", tmp_path / "w"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["model"] == "resnet18" and result["trainer"]["exit_code"] == 0
    assert result["trainer"]["images_per_sec"] > 0 and result["plain"]["images_per_sec"] > 0
    assert result["ratio"] == result["trainer"]["images_per_sec"] / result["plain"]["images_per_sec"]
    assert 0 <= result["trainer"]["data_wait_fraction"] <= 1
    # The resumed run starts exactly where the last checkpoint left off (epoch 2 of 2, step 0).
    resume = result["resume"]
    assert resume["start_position"] == [2, 0] and resume["redone_batches"] == 0, resume
    assert resume["resumed_startup_s"] > 0 and resume["epoch_train_s"] > 0
    assert "| resnet18 | 32 | 4 | off |" in proc.stdout
    # The breakdown timed the loader over every batch after its warm-up, and the step.
    parts = result["breakdown"]
    assert parts["loader_batches"] >= 2 and parts["loader_images_per_sec"] > 0 and parts["step_images_per_sec"] > 0
    assert parts["step_ratio_to_plain"] == round(parts["step_images_per_sec"] / result["plain"]["images_per_sec"], 3)
    variant, stock_loader = result["variants"]
    assert variant["overrides"] == {"num_workers": 0}
    assert variant["trainer"]["exit_code"] == 0 and variant["trainer"]["num_workers"] == 0
    assert variant["trainer"]["ratio"] == variant["trainer"]["images_per_sec"] / result["plain"]["images_per_sec"]
    # An env.NAME override goes to the trainer's environment, not run.json (which would refuse it).
    assert stock_loader["overrides"] == {"env.CVTRAIN_BATCH_RING": 0}
    assert stock_loader["trainer"]["exit_code"] == 0 and stock_loader["trainer"]["warnings"] == []


def test_gpu_bench_variant_syntax():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", f"{_TRAINERS}/bench/gpu_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_variant('resnet18:num_workers=8,amp="off",compile=true') == ("resnet18", {"num_workers": 8, "amp": "off", "compile": True})
    assert bench.parse_variant("fcos_resnet50_fpn:device=cuda:1") == ("fcos_resnet50_fpn", {"device": "cuda:1"})
    _, overrides = bench.parse_variant("resnet18:env.CVTRAIN_BATCH_RING=0,num_workers=8")
    assert bench.split_overrides(overrides) == ({"num_workers": 8}, {"CVTRAIN_BATCH_RING": "0"})
    for bad in ("resnet18", "resnet18:", ":num_workers=8", "resnet18:num_workers"):
        with pytest.raises(ValueError, match="--variant"):
            bench.parse_variant(bad)


def test_gpu_bench_smoke_runs_cvdet(tmp_path):
    """cvdet_n (framework cvtrain) is in the bench: trainer against the plain loop of the same
    model, and its export (outputs before NMS) verified by running it."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, f"{_TRAINERS}/bench/gpu_bench.py", "--smoke", "--models", "cvdet_n", "--out", out, "--workdir", tmp_path / "w"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["model"] == "cvdet_n" and result["trainer"]["exit_code"] == 0
    assert result["trainer"]["images_per_sec"] > 0 and result["plain"]["images_per_sec"] > 0
    assert result["ratio"] == result["trainer"]["images_per_sec"] / result["plain"]["images_per_sec"]
    assert set(result["trainer"]["final_metrics"]) >= {"mAP", "mAP50"}
    assert result["trainer"]["onnx"]["verified"] is True, result["trainer"]["onnx"]
    assert "| cvdet_n |" in proc.stdout
