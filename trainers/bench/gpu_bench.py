#!/usr/bin/env python3
"""End-to-end trainer throughput vs a plain PyTorch loop, on the same GPU in the same run.

For each model (ssdlite320_mobilenet_v3_large, fcos_resnet50_fpn, resnet18, and cvdet_n, the
package's own YOLO-style detector, framework "cvtrain"):
  1. generate a JPEG dataset on disk (`make-dataset shapes`);
  2. train it with the real trainer (`python3 -m cvtrain train`: real files, DataLoader
     workers decoding JPEGs, AMP, checkpoints, events) and read the training throughput of
     every epoch after the first (the first holds cuDNN autotuning and worker start-up);
  3. time a plain loop with the same model builder, batch, precision, memory format and
     optimizer on tensors already on the GPU (the data-loading-free ceiling).
The ratio trainer/plain must be >= 0.9 (issue: "at least 90% of the plain loop").

The resnet18 run is then resumed from its last checkpoint for one more epoch: batches redone
and start-up time beyond a fresh run's, against one epoch of training ("resume adds no more
than one epoch's worth of work"). Each run also reports the share of training time spent
waiting for the DataLoader (data_wait_fraction). For resnet18 a step breakdown times, in the
bench process, the training loader alone and the trainer's train_step on one batch (step_breakdown).

Also on the GPU machine: the ssdlite run exports ONNX and verifies it with onnxruntime,
and a short RT-DETR (transformers) run exercises that family when transformers imports.

    python3 trainers/bench/gpu_bench.py --out bench.json --markdown bench.md   # GPU
    /usr/bin/python3 trainers/bench/gpu_bench.py --smoke                       # CPU check

Prints one JSON object and a markdown table. Self-contained: no PYTHONPATH needed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

TRAINERS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINERS)

import torch  # noqa: E402

from cvtrain import compat  # noqa: E402
from cvtrain.datasets.shapes import make_shapes  # noqa: E402
from cvtrain.families import torchvision_models as tvm  # noqa: E402

# Full (GPU) cases: the reference points (H200, plain bf16 loop): ssdlite 291 img/s
# at batch 16, fcos 119 img/s at 640 px batch 16, resnet18 3200 img/s at 224 px batch 32.
# `steps` batches per epoch make each epoch several seconds, so the refill of the worker
# pipeline at an epoch's start (one worker decodes a whole first batch) stays ~1% of it;
# `jpeg` is the stored image side. `resume`: also resume the finished run for one more epoch
# (resume_check; one case only, the cheapest, to keep the metered GPU run short).
FULL_CASES = [
    {"name": "ssdlite320_mobilenet_v3_large", "task": "object-detection", "format": "yolo", "size": 320, "jpeg": 320, "batch": 16, "steps": 80, "epochs": 4, "export": True},
    {"name": "fcos_resnet50_fpn", "task": "object-detection", "format": "yolo", "size": 640, "jpeg": 640, "batch": 16, "steps": 60, "epochs": 4, "export": False},
    {"name": "resnet18", "task": "classification", "format": "image_folder", "size": 224, "jpeg": 256, "batch": 32, "steps": 300, "epochs": 4, "export": False, "resume": True, "breakdown": True},
    # YOLO-style training at its usual 640 px; epochs 1-3 are mosaics (four JPEGs decoded per
    # image), the last is not, as in any cvdet run. Exports (outputs before NMS) and verifies.
    {"name": "cvdet_n", "framework": "cvtrain", "task": "object-detection", "format": "yolo", "size": 640, "jpeg": 640, "batch": 32, "steps": 40, "epochs": 4, "export": True},
]
# CPU smoke: the same code paths at toy sizes (float32, few steps).
SMOKE_CASES = [
    {"name": "ssdlite320_mobilenet_v3_large", "task": "object-detection", "format": "yolo", "size": 64, "jpeg": 80, "batch": 2, "steps": 2, "epochs": 2, "export": False},
    {"name": "fcos_resnet50_fpn", "task": "object-detection", "format": "yolo", "size": 64, "jpeg": 80, "batch": 2, "steps": 2, "epochs": 2, "export": False},
    {"name": "resnet18", "task": "classification", "format": "image_folder", "size": 32, "jpeg": 40, "batch": 4, "steps": 2, "epochs": 2, "export": False, "resume": True, "breakdown": True},
    {"name": "cvdet_n", "framework": "cvtrain", "task": "object-detection", "format": "yolo", "size": 64, "jpeg": 80, "batch": 2, "steps": 2, "epochs": 2, "export": True},
]
# RT-DETR check (GPU run only, when transformers imports).
# DETR-style models train with AdamW at ~1e-4; SGD at the CNNs' 0.01 diverges.
RTDETR_CASE = {"name": "rtdetr_r18vd", "framework": "transformers", "task": "object-detection", "format": "yolo", "size": 320, "jpeg": 320, "batch": 8, "steps": 10, "epochs": 2, "export": False, "optimizer": "adamw", "lr": 1e-4}
# Plain-loop steps: warm-up (autotuning, allocator) and timed.
PLAIN_WARMUP = {True: 1, False: 15}
PLAIN_STEPS = {True: 2, False: 60}
# DataLoader-alone batches timed by the step breakdown (after its warm-up): a few seconds.
LOADER_BATCHES = 400
TARGET_RATIO = 0.9
RUN_TIMEOUT_S = 240
LEARNING_RATE = 0.01


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _median_after_first(values: list[float | None]) -> float | None:
    known = [v for v in values[1:] or values if v is not None]
    return round(statistics.median(known), 4) if known else None


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'resnet18:num_workers=8,amp="off"' -> ("resnet18", {"num_workers": 8, "amp": "off"})."""
    model, sep, rest = text.partition(":")
    if not sep or not model or not rest:
        raise ValueError(f"--variant {text!r}: expected MODEL:KEY=VALUE[,KEY=VALUE]")
    overrides: dict[str, Any] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--variant {text!r}: {item!r} is not KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # a bare string
    return model, overrides


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A variant's run.json keys, and its "env.NAME" keys as the trainer's environment."""
    run_json = {k: v for k, v in overrides.items() if not k.startswith("env.")}
    env = {k[4:]: str(v) for k, v in overrides.items() if k.startswith("env.")}
    return run_json, env


def _event_time(event: dict[str, Any]) -> float:
    return datetime.datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def resume_check(case: dict[str, Any], data: str, work: str, device: str, workers: int, smoke: bool, first: dict[str, Any]) -> dict[str, Any]:
    """Resumes the finished run from its last checkpoint for one more epoch and compares what
    the restart costs with one epoch of training (issue: resume adds no more than one epoch's
    worth of work). Redone batches: the resumed run must start exactly where the checkpoint
    left off; extra start-up: its start-up time beyond a fresh run's (loading the checkpoint)."""
    if not first.get("last_checkpoint"):
        return {"error": "the first run wrote no last checkpoint"}
    run = run_trainer(
        case, data, work, device, workers, smoke,
        overrides={"resume_from": first["last_checkpoint"], "epochs": case["epochs"] + 1, "export": []},
        tag="_resumed",
    )
    if run["exit_code"] != 0:
        return {"error": run.get("error"), "stderr_tail": run.get("stderr_tail")}
    epoch_s = statistics.median(first["epoch_train_s"][1:] or first["epoch_train_s"])
    steps = first["steps_per_epoch"]
    redone_batches = (case["epochs"] - run["start_position"][0]) * steps - run["start_position"][1]
    extra = max(0.0, run["startup_s"] - first["startup_s"])
    cost = extra + redone_batches * epoch_s / max(1, steps)
    return {
        "start_position": run["start_position"],
        "redone_batches": redone_batches,
        "fresh_startup_s": first["startup_s"],
        "resumed_startup_s": run["startup_s"],
        "extra_startup_s": round(extra, 2),
        "epoch_train_s": round(epoch_s, 2),
        "cost_in_epochs": round(cost / max(1e-9, epoch_s), 3),
        "pass": redone_batches == 0 and cost <= epoch_s,
    }


def trainer_config(case: dict[str, Any], data: str, out: str, device: str, workers: int, smoke: bool, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json of a benchmark run."""
    return {
        "task": case["task"],
        "framework": case.get("framework", "torchvision"),
        "architecture": case["name"],
        "dataset": {"path": data, "format": case["format"]},
        "output_dir": out,
        "epochs": case["epochs"],
        "batch_size": case["batch"],
        "image_size": case["size"],
        "learning_rate": case.get("lr", LEARNING_RATE),
        "optimizer": case.get("optimizer", "sgd"),
        "warmup_epochs": 0.5,
        "device": device,
        "amp": "off" if smoke else "auto",
        "num_workers": workers,
        "max_batches_per_epoch": case["steps"],
        "max_val_batches": 1,
        "checkpoint_every": case["epochs"],
        # The plain loop does not clip; neither does the trainer here, so both do the same math.
        "clip_grad_norm": None,
        "export": ["onnx"] if case["export"] else [],
        "session_id": "bench-" + name,
        **(overrides or {}),
    }


def run_trainer(
    case: dict[str, Any], data: str, work: str, device: str, workers: int, smoke: bool, overrides: dict[str, Any] | None = None, tag: str = ""
) -> dict[str, Any]:
    name = case["name"] + tag
    overrides, env_overrides = split_overrides(overrides or {})
    cfg = trainer_config(case, data, os.path.join(work, "run_" + name), device, workers, smoke, name, overrides)
    cfg_path = os.path.join(work, name + ".json")
    events_path = os.path.join(work, name + ".events.jsonl")
    with open(cfg_path, "w") as fh:
        json.dump(cfg, fh)
    env = dict(os.environ, PYTHONPATH=TRAINERS + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_overrides)
    t0 = time.monotonic()
    spawned = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cvtrain", "train", "--config", cfg_path, "--events", events_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        # A hung run must not eat the whole (metered) GPU lease: report it and go on.
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return {"exit_code": -1, "wall_s": RUN_TIMEOUT_S, "error": f"timed out after {RUN_TIMEOUT_S}s", "stderr_tail": tail[-3000:]}
    wall = time.monotonic() - t0
    events = [json.loads(line) for line in open(events_path)] if os.path.exists(events_path) else []
    result: dict[str, Any] = {"exit_code": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-3000:]
        failed = [e for e in events if e["type"] == "failed"]
        result["error"] = failed[-1]["message"] if failed else "no failed event"
        return result
    started = next(e for e in events if e["type"] == "started")
    epochs = [e for e in events if e["type"] == "epoch"]
    ips = [e["images_per_sec"] for e in epochs]
    steady = ips[1:] or ips
    # Mid-epoch windows (progress events, ~1 s each) after the first epoch: throughput
    # without epoch boundaries, to tell per-step costs from per-epoch ones.
    windows = [e["images_per_sec"] for e in events if e["type"] == "progress" and e["epoch"] > 1]
    lasts = [e["path"] for e in events if e["type"] == "checkpoint" and e["kind"] == "last"]
    result.update(
        # Process start to the `started` event: imports, CUDA, dataset scan, model, checkpoint.
        startup_s=round(_event_time(started) - spawned, 2),
        start_position=[started["start_epoch"], started["start_step"]],
        steps_per_epoch=started["steps_per_epoch"],
        epoch_train_s=[round(started["steps_per_epoch"] * case["batch"] / max(1e-9, e["images_per_sec"]), 2) for e in epochs],
        last_checkpoint=lasts[-1] if lasts else None,
        device=started["device"],
        amp=started["amp"],
        num_workers=started["num_workers"],
        epoch_images_per_sec=[round(v, 1) for v in ips],
        images_per_sec=statistics.median(steady),
        window_images_per_sec=statistics.median(windows) if windows else None,
        # Share of training time blocked on the DataLoader (median epoch after the first):
        # near 0, a gap to the plain loop is in the step; large, the run is input-bound.
        data_wait_fraction=_median_after_first([e.get("data_wait_fraction") for e in epochs]),
        warnings=sorted({e["code"] for e in events if e["type"] == "warning"}),
        train_loss=[round(e["train_loss"], 4) for e in epochs],
        final_metrics=epochs[-1]["metrics"] if epochs else {},
    )
    onnx = [e for e in events if e["type"] == "artifact" and e["kind"] == "onnx"]
    if onnx:
        result["onnx"] = {k: onnx[0].get(k) for k in ("verified", "runtime", "max_abs_diff", "note")}
    return result


def plain_loop(case: dict[str, Any], data: str, device: torch.device, amp_name: str, smoke: bool) -> dict[str, Any]:
    """The same model, batch, precision and optimizer, on tensors already on the device."""
    from cvtrain.datasets.formats import read_splits
    from cvtrain.datasets.loading import ClassificationDataset, DetectionDataset, collate, unpack_targets

    torch.manual_seed(0)
    batch_size, side = case["batch"], case["size"]
    train, _ = read_splits(data, case["format"], "train", "val")
    classes = len(train.class_names)
    detection = case["task"] == "object-detection"
    cvdet = case.get("framework") == "cvtrain"
    if detection:
        ds = DetectionDataset(train.samples, side, train=True, augment=False, seed=0)
        if cvdet:
            from cvtrain.families.cvdet.detector import CvDetector

            model = CvDetector(case["name"], classes)
        else:
            model = tvm.build_detector(case["name"], classes + 1, side)
    else:
        ds = ClassificationDataset(train.samples, side, train=True, augment=False, seed=0)
        model = tvm.build_classifier(case["name"], classes)
    # One real batch (same content the trainer sees), moved to the device once.
    batch = collate([ds[i] for i in range(batch_size)])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp_name)
    # As the trainer's channels_last "auto": classifiers and cvdet (convolutions only) with AMP on CUDA.
    channels_last = device.type == "cuda" and dtype is not None and (not detection or cvdet)
    if device.type == "cuda":
        compat.configure_cuda_backend()
    model.to(device).train()
    images = batch["images"].to(device).float().div_(255)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if detection:
        # cvdet takes the batch tensor as the trainer passes it; torchvision detectors a list.
        image_list = images if cvdet else list(images)
        targets = unpack_targets(batch["targets"], device)
    else:
        mean = torch.tensor(tvm.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(tvm.IMAGENET_STD, device=device).view(1, 3, 1, 1)
        images = (images - mean) / std
        labels = batch["labels"].to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    # One batch repeated many times at the full LR can diverge; the LR does not change the work.
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE * 0.1, momentum=0.9)
    scaler = compat.grad_scaler(enabled=dtype == torch.float16)

    def step() -> None:
        with compat.autocast(device.type, dtype, dtype is not None):
            if detection:
                losses = model(image_list, targets)
                # A "loss" key is the total and the rest are logged parts (the trainer's rule).
                loss = losses["loss"] if "loss" in losses else sum(losses.values())
            else:
                loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(PLAIN_WARMUP[smoke]):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(PLAIN_STEPS[smoke]):
        step()
    sync()
    seconds = time.perf_counter() - t0
    return {"images_per_sec": PLAIN_STEPS[smoke] * batch_size / seconds, "steps": PLAIN_STEPS[smoke], "channels_last": channels_last}


def step_breakdown(case: dict[str, Any], data: str, work: str, device: str, workers: int, smoke: bool, plain: dict[str, Any]) -> dict[str, Any]:
    """Splits the trainer's gap to the plain loop, in this process, with the trainer's own code:
      loader_images_per_sec: the training loader alone (workers decoding, handing batches over, no
        GPU work): the input pipeline's ceiling. Near the trainer's figure: input-bound.
      step_images_per_sec: BaseTrainer.train_step on one batch, repeated: the step without
        loading (conversion and normalisation on the device, loss accumulators, LR schedule;
        with the stock DataLoader also the copy to the device, which the batch ring makes
        when it hands the batch out). Its ratio to the plain loop is the cost of those extras.
    With both well above the trainer's run, the rest of the gap is the two running together:
    the workers and the pin-memory thread taking CPU from the process that launches kernels."""
    from cvtrain.config import TrainingConfig
    from cvtrain.registry import resolve_trainer

    name = case["name"] + "_breakdown"
    cfg = TrainingConfig.from_dict(trainer_config(case, data, os.path.join(work, "run_" + name), device, workers, smoke, name))
    trainer = resolve_trainer(cfg)(cfg)
    trainer.setup()
    trainer.train_sampler.set_epoch(0, 0, through_epoch=cfg.epochs - 1)
    batches = iter(trainer.train_loader)
    total = cfg.epochs * trainer.steps_per_epoch
    warm = min(total // 2, max(2, 2 * workers))  # every worker has delivered and refilled
    for _ in range(warm):
        batch = next(batches)
    timed = min(total - warm, LOADER_BATCHES)
    t0 = time.perf_counter()
    for _ in range(timed):
        batch = next(batches)
    loader_ips = timed * case["batch"] / (time.perf_counter() - t0)

    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)

    trainer.model.train()
    for _ in range(PLAIN_WARMUP[smoke]):
        trainer.train_step(batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(PLAIN_STEPS[smoke]):
        trainer.train_step(batch)
    sync()
    step_ips = PLAIN_STEPS[smoke] * case["batch"] / (time.perf_counter() - t0)
    # Its persistent workers end here, before the variants start theirs.
    del batches, batch
    close = getattr(trainer.train_loader, "close", None)
    if close is not None:
        close()
    del trainer
    gc.collect()
    return {
        "loader_batches": timed,
        "loader_images_per_sec": loader_ips,
        "step_images_per_sec": step_ips,
        "step_ratio_to_plain": round(step_ips / plain["images_per_sec"], 3),
        "loader_ratio_to_plain": round(loader_ips / plain["images_per_sec"], 3),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"GPU: {report['env']['device']} · torch {report['env']['torch']} · {report['env']['cpus']} CPUs · "
        f"mode {'smoke (CPU)' if report['smoke'] else 'full'}",
        "",
        "| model | input | batch | precision | trainer img/s (real JPEGs, DataLoader; median epoch after the 1st) | plain loop img/s (tensors on device) | trainer / plain | trainer mid-epoch windows img/s | trainer time waiting for data |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        t = r["trainer"]
        if t.get("exit_code"):
            lines.append(f"| {r['model']} | {r['image_size']} | {r['batch']} | - | failed: {t.get('error', '')[:80]} | - | - | - | - |")
            continue
        p = r.get("plain") or {}
        ratio = r.get("ratio")
        wait = "-" if t.get("data_wait_fraction") is None else f"{100 * t['data_wait_fraction']:.1f}%"
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['batch']} | {t.get('amp')} | {t['images_per_sec']:.1f} "
            f"| {p.get('images_per_sec', float('nan')):.1f} | {ratio:.2f}{' ✓' if r.get('pass') else ' ✗'} "
            f"| {t['window_images_per_sec'] or float('nan'):.1f} | {wait} |"
            if ratio is not None
            else f"| {r['model']} | {r['image_size']} | {r['batch']} | {t.get('amp')} | {t['images_per_sec']:.1f} | - | - | - | {wait} |"
        )
    variants = [(r["model"], v) for r in report["results"] for v in r.get("variants", [])]
    if variants:
        lines += ["", "| model | variant (run.json overrides) | trainer img/s | trainer / plain | time waiting for data |", "|---|---|---|---|---|"]
        for model, v in variants:
            t = v["trainer"]
            if t.get("exit_code"):
                lines.append(f"| {model} | `{json.dumps(v['overrides'])}` | failed: {str(t.get('error'))[:80]} | - | - |")
            else:
                wait = "-" if t.get("data_wait_fraction") is None else f"{100 * t['data_wait_fraction']:.1f}%"
                lines.append(f"| {model} | `{json.dumps(v['overrides'])}` | {t['images_per_sec']:.1f} | {t['ratio']:.2f} | {wait} |")
    breakdowns = [(r["model"], r["breakdown"]) for r in report["results"] if r.get("breakdown")]
    if breakdowns:
        lines += [
            "",
            "| model | training loader alone img/s (/ plain) | trainer's train_step on one batch img/s (/ plain) |",
            "|---|---|---|",
        ]
        for model, x in breakdowns:
            lines.append(
                f"| {model} | {x['loader_images_per_sec']:.1f} ({x['loader_ratio_to_plain']:.2f}) "
                f"| {x['step_images_per_sec']:.1f} ({x['step_ratio_to_plain']:.2f}) |"
            )
    resumes = [(r["model"], r["resume"]) for r in report["results"] if r.get("resume")]
    if resumes:
        lines += ["", "| model | resume: batches redone | start-up fresh / resumed s | one epoch's training s | resume cost in epochs |", "|---|---|---|---|---|"]
        for model, x in resumes:
            if "error" in x:
                lines.append(f"| {model} | failed: {str(x['error'])[:80]} | - | - | - |")
            else:
                lines.append(
                    f"| {model} | {x['redone_batches']} | {x['fresh_startup_s']} / {x['resumed_startup_s']} | {x['epoch_train_s']} "
                    f"| {x['cost_in_epochs']:.2f}{' ✓' if x['pass'] else ' ✗'} |"
                )
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | None) -> None:
    """Written after every case too, so a run cut short still leaves what it measured."""
    if path:
        with open(path + ".tmp", "w") as fh:
            json.dump(report, fh, indent=1, default=str)
        os.replace(path + ".tmp", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every code path")
    ap.add_argument("--models", default="", help="comma-separated subset of the model names")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: min(CPUs, 14); smoke: 1)")
    ap.add_argument("--workdir", help="keep datasets and runs here (default: a temp dir, removed)")
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--markdown", help="write the markdown table here")
    ap.add_argument("--skip-rtdetr", action="store_true", help="skip the transformers RT-DETR check")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE[,KEY=VALUE]",
        help="one more trainer run of MODEL with these run.json overrides (VALUE is JSON; a KEY env.NAME sets the trainer's environment variable NAME instead), compared with the same plain loop; e.g. resnet18:num_workers=8",
    )
    args = ap.parse_args()
    try:
        variants = [parse_variant(v) for v in args.variant]
    except ValueError as exc:
        ap.error(str(exc))

    smoke = args.smoke
    if not smoke and not torch.cuda.is_available():
        log("no CUDA device: run with --smoke for the CPU check")
        return 2
    device = torch.device("cpu" if smoke else "cuda:0")
    workers = args.workers or (1 if smoke else min(os.cpu_count() or 1, 14))
    cases = SMOKE_CASES if smoke else FULL_CASES
    wanted = {m for m in args.models.split(",") if m}
    if wanted:
        cases = [c for c in cases if c["name"] in wanted]
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="cvtrain-bench-")
    work = args.workdir or tmp.name
    os.makedirs(work, exist_ok=True)
    report: dict[str, Any] = {
        "smoke": smoke,
        "target_ratio": TARGET_RATIO,
        "env": {
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "workers": workers,
        },
        "results": [],
    }
    for case in cases:
        data = os.path.join(work, f"data_{case['format']}_{case['jpeg']}")
        if not os.path.isdir(data):
            images = case["batch"] * case["steps"] + max(4, case["batch"] // 2)
            t0 = time.monotonic()
            make_shapes(data, case["format"], images, seed=0, size=case["jpeg"], val_fraction=max(4, case["batch"] // 2) / images, workers=os.cpu_count() or 1)
            log(f"generated {images} JPEGs ({case['jpeg']} px) in {time.monotonic() - t0:.1f}s at {data}")
        log(f"[{case['name']}] trainer ...")
        trainer = run_trainer(case, data, work, "cpu" if smoke else "cuda", workers, smoke)
        entry: dict[str, Any] = {"model": case["name"], "image_size": case["size"], "batch": case["batch"], "trainer": trainer}
        if trainer["exit_code"] == 0:
            log(f"[{case['name']}] trainer {trainer['images_per_sec']:.1f} img/s; plain loop ...")
            plain = plain_loop(case, data, device, trainer["amp"], smoke)
            entry["plain"] = plain
            entry["ratio"] = trainer["images_per_sec"] / plain["images_per_sec"]
            entry["pass"] = entry["ratio"] >= TARGET_RATIO
            if case.get("breakdown"):
                log(f"[{case['name']}] step breakdown (training loader alone, train_step on one batch) ...")
                entry["breakdown"] = step_breakdown(case, data, work, "cpu" if smoke else "cuda", workers, smoke, plain)
                log(f"[{case['name']}] breakdown: {entry['breakdown']}")
            for model, overrides in variants:
                if model != case["name"]:
                    continue
                tag = "_" + "_".join(f"{k}-{v}" for k, v in overrides.items())
                log(f"[{case['name']}] variant {overrides} ...")
                run = run_trainer(case, data, work, "cpu" if smoke else "cuda", workers, smoke, overrides=overrides, tag=tag)
                if run["exit_code"] == 0:
                    run["ratio"] = run["images_per_sec"] / plain["images_per_sec"]
                entry.setdefault("variants", []).append({"overrides": overrides, "trainer": run})
                log(f"[{case['name']}] variant {overrides}: {run.get('images_per_sec')} img/s, ratio {run.get('ratio')}")
            if case.get("resume"):
                log(f"[{case['name']}] resume from the last checkpoint for one more epoch ...")
                entry["resume"] = resume_check(case, data, work, "cpu" if smoke else "cuda", workers, smoke, trainer)
                log(f"[{case['name']}] resume: {entry['resume']}")
            log(f"[{case['name']}] plain {plain['images_per_sec']:.1f} img/s, ratio {entry['ratio']:.3f}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            log(f"[{case['name']}] trainer failed:\n{trainer.get('stderr_tail', '')}")
        report["results"].append(entry)
        write_report(report, args.out)

    if not smoke and not args.skip_rtdetr and not wanted:
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            report["rtdetr"] = {"skipped": "transformers not importable"}
        else:
            case = RTDETR_CASE
            data = os.path.join(work, f"data_{case['format']}_{case['jpeg']}")
            if not os.path.isdir(data):
                make_shapes(data, case["format"], case["batch"] * case["steps"] + 8, seed=0, size=case["jpeg"], workers=os.cpu_count() or 1)
            log("[rtdetr_r18vd] trainer (transformers family) ...")
            report["rtdetr"] = run_trainer(case, data, work, "cuda", workers, smoke)

    report["all_pass"] = all(r.get("pass") for r in report["results"])
    text = markdown(report)
    print(json.dumps(report, indent=1, default=str))
    print(text)
    write_report(report, args.out)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    failed_runs = [r for r in report["results"] if r["trainer"]["exit_code"] != 0]
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
