"""`validate-dataset DIR --format F`: every problem of a dataset, with file and line.

The same checks the readers apply before training, plus a decode of every image, over
every split found on disk. The report is JSON (printed by the CLI)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import DatasetError
from .formats import Problem, SplitIndex, list_splits, read_coco, read_image_folder, read_yolo
from .transforms import decode

# Decoding at this size (JPEG draft mode) is enough to detect truncated or broken files
# and is much cheaper than a full decode.
CHECK_DECODE_SIDE = 64


def _boxes(index: SplitIndex) -> int:
    return sum(len(getattr(s, "labels", [])) for s in index.samples if hasattr(s, "boxes"))


def validate_dataset(root: str, fmt: str, check_images: bool = True) -> dict[str, Any]:
    root = os.path.abspath(root)
    problems: list[Problem] = []
    report: dict[str, Any] = {"path": root, "format": fmt, "classes": [], "splits": {}}
    if not os.path.isdir(root):
        problems.append(Problem(root, "dataset folder does not exist", code="missing"))
        splits: list[str] = []
    else:
        splits = list_splits(root, fmt)
        if not splits:
            problems.append(Problem(root, f"no splits found for format {fmt}", code="missing"))
    # The training split fixes class order for the others, as in training.
    splits.sort(key=lambda s: (s != "train", s))
    class_names: list[str] | None = None
    class_ids: list[int] | None = None
    for split in splits:
        try:
            if fmt == "yolo":
                index = read_yolo(root, split)
            elif fmt == "coco":
                index, ids = read_coco(root, split, class_ids)
                class_ids = class_ids or ids
            else:
                index = read_image_folder(root, split, class_names)
        except DatasetError as exc:
            problems.append(Problem(root, str(exc), code="unreadable"))
            continue
        class_names = class_names or index.class_names
        problems.extend(index.problems)
        bad_images = 0
        if check_images:
            for sample in index.samples:
                try:
                    decode(sample.path, CHECK_DECODE_SIDE)
                except Exception as exc:
                    bad_images += 1
                    problems.append(Problem(sample.path, f"image does not decode: {type(exc).__name__}: {exc}", code="bad_image"))
        report["splits"][split] = {
            "images": len(index.samples) - bad_images,
            "boxes": _boxes(index),
            "skipped": index.dropped + bad_images,
        }
    report["classes"] = class_names or []
    report["problems"] = [p.as_dict() for p in problems]
    report["valid"] = not problems
    return report
