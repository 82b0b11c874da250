#!/usr/bin/env python3
"""What the input pipeline costs on the CPU, without a GPU (bench/RESULTS.md, issue 4).

1. Colour jitter per 224 px image: cvtrain's one affine pass against the three chained
   ImageEnhance blends it replaced (same random factors).
2. The training loader alone over 256 px JPEGs cropped to 224, batch 32, augmented: images
   per second, and the CPU time of the *training process* per batch (time.process_time: all
   its threads, not the workers), for the stock DataLoader path and for the batch ring.
   That CPU time is what competes with the thread launching kernels on a GPU machine.

    /usr/bin/python3 trainers/bench/loader_bench.py [--workers 2] [--batches 60]

Generates its dataset (shapes, 256 px JPEGs) in a temp dir unless --data names one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

TRAINERS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINERS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from cvtrain import settings  # noqa: E402
from cvtrain.datasets.batch_ring import RingLoader  # noqa: E402
from cvtrain.datasets.formats import read_splits  # noqa: E402
from cvtrain.datasets.loading import ClassificationDataset, EpochBatchSampler, make_loader  # noqa: E402
from cvtrain.datasets.shapes import make_shapes  # noqa: E402
from cvtrain.datasets.transforms import color_jitter, decode  # noqa: E402


def chained_enhance(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """The colour jitter cvtrain used before: three ImageEnhance blends in a random order."""
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    ops = ((ImageEnhance.Brightness, b), (ImageEnhance.Contrast, c), (ImageEnhance.Color, s))
    for i in rng.permutation(3):
        op, factor = ops[i]
        img = op(img).enhance(float(factor))
    return img


def time_jitter(paths: list[str], repeats: int = 3) -> dict[str, float]:
    images = [decode(p, 224)[0].resize((224, 224)) for p in paths]
    out = {}
    for name, fn in (("one affine pass (cvtrain)", color_jitter), ("three ImageEnhance blends (before)", chained_enhance)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i, img in enumerate(images):
                fn(img, np.random.default_rng(i), settings.COLOR_JITTER)
            best = min(best, (time.perf_counter() - t0) / len(images))
        out[name] = best * 1e3
    return out


def time_loader(kind: str, ds: ClassificationDataset, workers: int, batches: int) -> dict[str, float]:
    sampler = EpochBatchSampler(len(ds), 32, 0, shuffle=True, drop_last=True)
    sampler.set_epoch(0, 0, through_epoch=1000)
    if kind == "ring":
        loader = RingLoader(ds, sampler, workers, 32, (3, 224, 224), torch.device("cpu"))
    else:
        loader = make_loader(ds, sampler, workers, pin_memory=False)
    it = iter(loader)
    for _ in range(max(2, 2 * workers)):  # workers started and their queues full
        next(it)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(batches):
        next(it)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    del it
    if kind == "ring":
        loader.close()
    del loader
    return {"images_per_sec": batches * 32 / wall, "main_cpu_ms_per_batch": 1e3 * cpu / batches}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2, help="each loader is timed this many times, alternating")
    ap.add_argument("--data", help="an image_folder dataset of 256 px JPEGs (default: generated)")
    args = ap.parse_args()
    tmp = None
    data = args.data
    if not data:
        tmp = tempfile.TemporaryDirectory(prefix="cvtrain-loader-bench-")
        data = os.path.join(tmp.name, "shapes256")
        make_shapes(data, "image_folder", 2000, seed=0, size=256, workers=os.cpu_count() or 1)
    train, _ = read_splits(data, "image_folder", "train", "val")
    jitter = time_jitter([s.path for s in train.samples[:200]])
    ds = ClassificationDataset(train.samples, 224, train=True, augment=True, seed=0)
    rows: dict[str, list[dict[str, float]]] = {"stock": [], "ring": []}
    for _ in range(args.rounds):
        for kind in ("stock", "ring"):
            rows[kind].append(time_loader(kind, ds, args.workers, args.batches))
    print(f"CPUs {os.cpu_count()}, torch {torch.__version__}, {args.workers} workers, {args.batches} batches of 32 x 224 px, augmented")
    print("\n| colour jitter, 224 px image | ms per image (best of 3 over 200 images) |\n|---|---|")
    for name, ms in jitter.items():
        print(f"| {name} | {ms:.3f} |")
    print("\n| training loader alone | img/s per round | training-process CPU ms per batch per round |\n|---|---|---|")
    names = {"stock": "stock DataLoader path", "ring": "batch ring"}
    for kind, runs in rows.items():
        ips = " · ".join(f"{r['images_per_sec']:.0f}" for r in runs)
        cpu = " · ".join(f"{r['main_cpu_ms_per_batch']:.2f}" for r in runs)
        print(f"| {names[kind]} | {ips} | {cpu} |")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
