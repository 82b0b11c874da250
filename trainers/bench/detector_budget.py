#!/usr/bin/env python3
"""Detectors from scratch on the shapes set, CPU, under the same wall-clock training budget.

1. Generate the quickstart's dataset (`make-dataset shapes`, YOLO layout, 160 px JPEGs).
2. Train cvdet_n with the quickstart's configuration (scripts/demo.ts) through the real CLI;
   its training time (sum of the epochs' training seconds, validation excluded) is the budget.
3. Measure the training throughput (images/s, trainer, same image size and batch) of
   ssdlite320_mobilenet_v3_large and fasterrcnn_mobilenet_v3_large_320_fpn in short probe runs.
4. Train ssdlite320 for as many epochs as fit in the budget at its measured throughput (its
   cosine schedule then ends at the budget, as cvdet's does) and compare the final mAP50.

Both runs happen in the same invocation on the same machine, one after the other; on a machine
shared with other work, throughput varies run to run, so the report states each run's actual
training seconds next to the budget.

    /usr/bin/python3 trainers/bench/detector_budget.py --out bench/detector_budget.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

TRAINERS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINERS)

from cvtrain.datasets.shapes import make_shapes  # noqa: E402

# The quickstart's run (scripts/demo.ts; seed 1 dataset of 320 images at 160 px).
QUICKSTART = {"images": 320, "size": 160, "epochs": 8, "batch": 16, "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.0005, "warmup": 1}
# ssdlite with the learning rate torchvision detectors train well with under AdamW.
BASELINE = {"lr": 0.001, "optimizer": "adamw", "weight_decay": 0.0005, "warmup": 1}
# Throughput probes: (batches per epoch, epochs, batch). fasterrcnn's training step on this CPU
# takes ~48 s for 4 images at 160 px (measured; RoIAlign's backward), so it gets one short epoch
# of small batches rather than the minutes a batch of 16 would take.
PROBES = {
    "ssdlite320_mobilenet_v3_large": (6, 2, QUICKSTART["batch"]),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (2, 1, 4),
}


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def train(data: str, work: str, name: str, framework: str, arch: str, epochs: int, batch: int, size: int, opt: dict[str, Any], **over: Any) -> dict[str, Any]:
    out = os.path.join(work, name)
    cfg = {
        "task": "object-detection",
        "framework": framework,
        "architecture": arch,
        "dataset": {"path": data, "format": "yolo"},
        "output_dir": out,
        "epochs": epochs,
        "batch_size": batch,
        "image_size": size,
        "learning_rate": opt["lr"],
        "optimizer": opt["optimizer"],
        "weight_decay": opt["weight_decay"],
        "warmup_epochs": opt["warmup"],
        "device": "cpu",
        "export": [],
        "seed": 1,
        "session_id": "bench-" + name,
        **over,
    }
    path = os.path.join(work, name + ".json")
    events_path = os.path.join(work, name + ".events.jsonl")
    with open(path, "w") as fh:
        json.dump(cfg, fh)
    env = dict(os.environ, PYTHONPATH=TRAINERS)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cvtrain", "train", "--config", path, "--events", events_path], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in open(events_path)]
    started = next(e for e in events if e["type"] == "started")
    epochs_ev = [e for e in events if e["type"] == "epoch"]
    # Training seconds per epoch from the epoch's throughput (validation excluded).
    train_s = [started["steps_per_epoch"] * batch / max(1e-9, e["images_per_sec"]) for e in epochs_ev]
    return {
        "architecture": arch,
        "epochs": epochs,
        "batch": batch,
        "image_size": size,
        "steps_per_epoch": started["steps_per_epoch"],
        "train_seconds": round(sum(train_s), 1),
        "wall_seconds": round(wall, 1),
        "images_per_sec": round(statistics.median([e["images_per_sec"] for e in epochs_ev[1:] or epochs_ev]), 2),
        "mAP50": [round(e["metrics"]["mAP50"], 4) for e in epochs_ev],
        "mAP": [round(e["metrics"]["mAP"], 4) for e in epochs_ev],
        "final_mAP50": epochs_ev[-1]["metrics"]["mAP50"],
        "final_mAP": epochs_ev[-1]["metrics"]["mAP"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--workdir", help="keep datasets and runs here (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=QUICKSTART["epochs"], help="cvdet_n epochs (the quickstart's by default)")
    args = ap.parse_args()
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="cvtrain-budget-")
    work = args.workdir or tmp.name
    os.makedirs(work, exist_ok=True)
    q = QUICKSTART
    data = os.path.join(work, "shapes")
    if not os.path.isdir(data):
        make_shapes(data, "yolo", q["images"], seed=1, size=q["size"])
    report: dict[str, Any] = {"cpus": os.cpu_count(), "dataset": {"images": q["images"], "size": q["size"], "seed": 1}}

    log("cvdet_n, the quickstart's configuration ...")
    cvdet = train(data, work, "cvdet_n", "cvtrain", "cvdet_n", args.epochs, q["batch"], q["size"], q)
    budget = cvdet["train_seconds"]
    report["budget_seconds"] = budget
    report["cvdet_n"] = cvdet
    log(f"cvdet_n: mAP50 {cvdet['final_mAP50']:.3f} in {budget:.0f} s of training ({cvdet['images_per_sec']} img/s)")

    probes = {}
    for arch, (batches, epochs, batch) in PROBES.items():
        log(f"{arch}: throughput probe ({batches} batches of {batch} x {epochs} epochs) ...")
        probes[arch] = train(data, work, "probe_" + arch, "torchvision", arch, epochs, batch, q["size"], BASELINE, max_batches_per_epoch=batches, max_val_batches=1)
    report["throughput_images_per_sec"] = {"cvdet_n": cvdet["images_per_sec"], **{a: p["images_per_sec"] for a, p in probes.items()}}
    report["throughput_batch"] = {"cvdet_n": q["batch"], **{a: p["batch"] for a, p in probes.items()}}

    ssd_ips = probes["ssdlite320_mobilenet_v3_large"]["images_per_sec"]
    train_images = cvdet["steps_per_epoch"] * q["batch"]
    epochs = max(1, math.floor(budget * ssd_ips / train_images))
    log(f"ssdlite320: {epochs} epochs fit the {budget:.0f} s budget at {ssd_ips} img/s ...")
    ssd = train(data, work, "ssdlite320", "torchvision", "ssdlite320_mobilenet_v3_large", epochs, q["batch"], q["size"], BASELINE)
    report["ssdlite320_mobilenet_v3_large"] = ssd
    report["ratio_mAP50"] = cvdet["final_mAP50"] / ssd["final_mAP50"] if ssd["final_mAP50"] > 0 else None
    report["pass"] = {"10x_ssdlite": bool(cvdet["final_mAP50"] >= 10 * max(ssd["final_mAP50"], 0.0)), "mAP50_0.5": cvdet["final_mAP50"] >= 0.5}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
