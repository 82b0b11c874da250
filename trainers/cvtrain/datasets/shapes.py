"""`make-dataset shapes`: a synthetic dataset of coloured circles, squares and triangles.

Real JPEG files in any of the three layouts, byte-identical for the same arguments, so
tests and benchmarks exercise the same decode path as user data.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
# Detection images hold between these many shapes.
SHAPES_PER_IMAGE = (1, 3)
# Shape side as a fraction of the image side: detection / classification.
DET_SIZE_RANGE = (0.18, 0.45)
CLS_SIZE_RANGE = (0.35, 0.75)
# Placement retries before accepting an overlap between two shapes.
PLACEMENT_TRIES = 20
JPEG_QUALITY = 90


def _split_sizes(n: int, val_fraction: float) -> dict[str, int]:
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    return {"train": n - n_val, "val": n_val}


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(150, 256, size=3)
    noise = rng.integers(-12, 13, size=(size, size, 1))
    arr = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _draw(draw: ImageDraw.ImageDraw, cls: int, x: float, y: float, s: float, color: tuple[int, ...]) -> float:
    """Draw class `cls` in the box (x, y, x+s, y+s); returns the shape's area in pixels."""
    if cls == 0:
        draw.ellipse([x, y, x + s, y + s], fill=color)
        return math.pi * (s / 2) ** 2
    if cls == 1:
        draw.rectangle([x, y, x + s, y + s], fill=color)
        return s * s
    draw.polygon([(x + s / 2, y), (x + s, y + s), (x, y + s)], fill=color)
    return s * s / 2


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render(seed: int, split: str, i: int, size: int, task: str) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image and its objects [{cls, box: [x1, y1, x2, y2], area}]."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    objects: list[dict[str, Any]] = []
    if task == "classification":
        count, size_range = 1, CLS_SIZE_RANGE
    else:
        count, size_range = int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1)), DET_SIZE_RANGE
    for _ in range(count):
        cls = int(rng.integers(0, len(CLASSES)))
        color = tuple(int(v) for v in rng.integers(0, 110, size=3))
        for _try in range(PLACEMENT_TRIES):
            s = float(rng.uniform(*size_range)) * size
            x = float(rng.uniform(0, size - s))
            y = float(rng.uniform(0, size - s))
            box = [x, y, x + s, y + s]
            if all(_iou(box, o["box"]) < 0.2 for o in objects):
                break
        area = _draw(draw, cls, x, y, s, color)
        objects.append({"cls": cls, "box": box, "area": area})
    return img, objects


def _render_and_save(args: tuple[int, str, int, int, str, str, str]) -> list[dict[str, Any]]:
    seed, split, i, size, fmt, out, name = args
    task = "classification" if fmt == "image_folder" else "object-detection"
    img, objects = render(seed, split, i, size, task)
    if fmt == "image_folder":
        path = os.path.join(out, split, CLASSES[objects[0]["cls"]], name)
    else:
        path = os.path.join(out, "images", split, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, format="JPEG", quality=JPEG_QUALITY)
    return objects


def make_shapes(
    out: str, fmt: str, images: int, seed: int = 0, size: int = 160, val_fraction: float = 0.25, workers: int = 1
) -> dict[str, Any]:
    """Write the dataset; returns a summary {format, classes, splits: {split: images}}."""
    if fmt not in ("yolo", "coco", "image_folder"):
        raise ValueError(f"unknown format {fmt}")
    jobs = []
    names: dict[tuple[str, int], str] = {}
    for split, n in _split_sizes(images, val_fraction).items():
        for i in range(n):
            names[(split, i)] = f"img_{i:05d}.jpg"
            jobs.append((seed, split, i, size, fmt, out, names[(split, i)]))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_render_and_save, jobs, chunksize=16))
    else:
        results = [_render_and_save(j) for j in jobs]
    renders = {(job[1], job[2]): objs for job, objs in zip(jobs, results)}

    splits = _split_sizes(images, val_fraction)
    if fmt == "yolo":
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "data.yaml"), "w", encoding="utf-8") as fh:
            fh.write("path: .\ntrain: images/train\nval: images/val\n")
            fh.write(f"nc: {len(CLASSES)}\nnames: [{', '.join(CLASSES)}]\n")
        for (split, i), objs in sorted(renders.items()):
            label_dir = os.path.join(out, "labels", split)
            os.makedirs(label_dir, exist_ok=True)
            with open(os.path.join(label_dir, names[(split, i)][:-4] + ".txt"), "w", encoding="utf-8") as fh:
                for o in objs:
                    x1, y1, x2, y2 = o["box"]
                    fh.write(
                        f"{o['cls']} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                        f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n"
                    )
    elif fmt == "coco":
        os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
        for split, n in splits.items():
            imgs, anns = [], []
            for i in range(n):
                imgs.append({"id": i + 1, "file_name": names[(split, i)], "width": size, "height": size})
                for o in renders[(split, i)]:
                    x1, y1, x2, y2 = o["box"]
                    anns.append(
                        {
                            "id": len(anns) + 1,
                            "image_id": i + 1,
                            "category_id": o["cls"] + 1,
                            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                            "area": round(o["area"], 3),
                            "iscrowd": 0,
                        }
                    )
            doc = {
                "info": {"description": f"cvtrain synthetic shapes, seed {seed}"},
                "images": imgs,
                "annotations": anns,
                "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(CLASSES)],
            }
            with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
    return {"format": fmt, "classes": list(CLASSES), "splits": splits, "image_size": size, "seed": seed, "path": os.path.abspath(out)}
