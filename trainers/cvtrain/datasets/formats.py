"""Readers of the three dataset layouts (the same ones the API validates on upload).

YOLO          data.yaml (`names`: list or {id: name}), images/<split>/*, labels/<split>/<stem>.txt
              with lines `class cx cy w h` normalised to 0..1 (a missing label file means
              an image without objects).
COCO          annotations/instances_<split>.json; each image's file_name is looked up under
              images/<split>/, <split>/, images/ and the dataset root, in that order.
IMAGE_FOLDER  <split>/<class name>/<image> (classification).

Readers never decode images (that happens in DataLoader workers); they parse labels,
collect every problem with file and line, and drop the samples those problems make
unreliable. Problems are data, not exceptions, so validate-dataset can list them all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import settings
from ..errors import DatasetError


@dataclass
class Problem:
    path: str
    message: str
    line: int | None = None
    code: str = "bad_label"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "code": self.code, "message": self.message}


@dataclass
class DetSample:
    path: str
    image_id: int
    labels: np.ndarray  # (N,) int64, 0-based class index
    boxes: np.ndarray  # (N, 4) float32: normalised cx cy w h when `normalized`, else pixel x1 y1 x2 y2
    normalized: bool
    iscrowd: np.ndarray  # (N,) uint8
    area: np.ndarray | None = None  # (N,) float32 from COCO's `area`; None: box area in pixels


@dataclass
class ClsSample:
    path: str
    label: int


@dataclass
class SplitIndex:
    split: str
    class_names: list[str]
    samples: list[Any] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Images (or label files) discarded because of problems.
    dropped: int = 0

    @property
    def total(self) -> int:
        return len(self.samples) + self.dropped


def _is_image(name: str) -> bool:
    return name.lower().endswith(settings.IMAGE_EXTENSIONS)


def _list_images(folder: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if _is_image(name):
                out.append(os.path.join(dirpath, name))
    out.sort()
    return out


# --- YOLO ---------------------------------------------------------------------------------


def read_yolo_names(root: str) -> list[str]:
    import yaml

    path = os.path.join(root, "data.yaml")
    if not os.path.isfile(path):
        raise DatasetError(f"YOLO dataset has no data.yaml: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML: {exc}") from None
    names = meta.get("names") if isinstance(meta, dict) else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: `names` keys must be class ids 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{path}: `names` keys must be 0..{len(keys) - 1} without gaps")
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: `names` must be a non-empty list of class names")
    nc = meta.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{path}: nc is {nc} but `names` has {len(names)} entries")
    return [str(n) for n in names]


def read_yolo(root: str, split: str) -> SplitIndex:
    names = read_yolo_names(root)
    index = SplitIndex(split, names)
    img_dir = os.path.join(root, "images", split)
    lbl_dir = os.path.join(root, "labels", split)
    if not os.path.isdir(img_dir):
        raise DatasetError(f"YOLO split '{split}' has no folder {img_dir}")
    images = _list_images(img_dir)
    stems = {}
    for path in images:
        rel = os.path.relpath(path, img_dir)
        stem = os.path.splitext(rel)[0]
        if stem in stems:
            index.problems.append(Problem(path, f"two images share the label name {stem}.txt", code="duplicate"))
        stems[stem] = path
    if os.path.isdir(lbl_dir):
        for dirpath, _dirs, files in os.walk(lbl_dir):
            for name in files:
                if name.endswith(".txt"):
                    stem = os.path.splitext(os.path.relpath(os.path.join(dirpath, name), lbl_dir))[0]
                    if stem not in stems:
                        index.problems.append(
                            Problem(os.path.join(dirpath, name), "label file without image", code="orphan_label")
                        )
    for image_id, path in enumerate(images):
        stem = os.path.splitext(os.path.relpath(path, img_dir))[0]
        label_path = os.path.join(lbl_dir, stem + ".txt")
        labels, boxes, bad = [], [], False
        if os.path.isfile(label_path):
            with open(label_path, encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    problem = _yolo_line_problem(parts, len(names))
                    if problem:
                        index.problems.append(Problem(label_path, problem, lineno))
                        bad = True
                        continue
                    labels.append(int(float(parts[0])))
                    boxes.append([float(v) for v in parts[1:5]])
        if bad:
            index.dropped += 1
            continue
        index.samples.append(
            DetSample(
                path=path,
                image_id=image_id,
                labels=np.asarray(labels, dtype=np.int64),
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                normalized=True,
                iscrowd=np.zeros(len(labels), dtype=np.uint8),
            )
        )
    return index


def _yolo_line_problem(parts: list[str], num_classes: int) -> str | None:
    if len(parts) != 5:
        return f"expected 5 values (class cx cy w h), found {len(parts)}"
    try:
        cls_f = float(parts[0])
        vals = [float(v) for v in parts[1:]]
    except ValueError:
        return "values must be numbers"
    if cls_f != int(cls_f) or not 0 <= cls_f < num_classes:
        return f"class id {parts[0]} out of range 0..{num_classes - 1}"
    cx, cy, w, h = vals
    if not all(np.isfinite(vals)):
        return "coordinates must be finite"
    tol = 1e-6
    if w <= 0 or h <= 0:
        return "box width and height must be > 0"
    if min(cx - w / 2, cy - h / 2) < -tol or max(cx + w / 2, cy + h / 2) > 1 + tol or min(vals) < 0 or max(vals) > 1:
        return "coordinates outside 0..1"
    return None


# --- COCO ---------------------------------------------------------------------------------


def coco_annotation_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def _resolve_coco_image(root: str, split: str, file_name: str) -> str | None:
    for base in (os.path.join(root, "images", split), os.path.join(root, split), os.path.join(root, "images"), root):
        candidate = os.path.normpath(os.path.join(base, file_name))
        if not candidate.startswith(os.path.normpath(root) + os.sep):
            return None  # file_name climbs out of the dataset
        if os.path.isfile(candidate):
            return candidate
    return None


def read_coco(root: str, split: str, class_ids: list[int] | None = None) -> tuple[SplitIndex, list[int]]:
    """Returns the split and the COCO category ids in class-index order.

    `class_ids` (from the training split) fixes the class order for other splits, so a
    category id means the same class index everywhere.
    """
    path = coco_annotation_path(root, split)
    if not os.path.isfile(path):
        raise DatasetError(f"COCO split '{split}' has no annotation file {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise DatasetError(f"{path}: needs `images` and `categories` lists")
    cats = [c for c in data["categories"] if isinstance(c, dict) and "id" in c]
    cats.sort(key=lambda c: c["id"])
    if class_ids is None:
        class_ids = [c["id"] for c in cats]
    names_by_id = {c["id"]: str(c.get("name", c["id"])) for c in cats}
    if not class_ids:
        raise DatasetError(f"{path}: no categories")
    index = SplitIndex(split, [names_by_id.get(cid, str(cid)) for cid in class_ids])
    class_of = {cid: i for i, cid in enumerate(class_ids)}

    images: dict[Any, dict[str, Any]] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            index.problems.append(Problem(path, "image entry without id or file_name", code="bad_image_entry"))
            continue
        if img["id"] in images:
            index.problems.append(Problem(path, f"duplicate image id {img['id']}", code="duplicate"))
            continue
        images[img["id"]] = img
    per_image: dict[Any, list[dict[str, Any]]] = {iid: [] for iid in images}
    bad_images: set = set()
    seen_ann: set = set()
    for ann in data.get("annotations", []) or []:
        if not isinstance(ann, dict):
            index.problems.append(Problem(path, "annotation is not an object"))
            continue
        aid = ann.get("id")
        if aid is not None:
            if aid in seen_ann:
                index.problems.append(Problem(path, f"duplicate annotation id {aid}", code="duplicate"))
            seen_ann.add(aid)
        iid = ann.get("image_id")
        if iid not in images:
            index.problems.append(Problem(path, f"annotation {aid} refers to unknown image {iid}"))
            continue
        problem = _coco_box_problem(ann, images[iid], class_of)
        if problem:
            index.problems.append(Problem(path, f"annotation {aid} (image {iid}): {problem}"))
            bad_images.add(iid)
            continue
        per_image[iid].append(ann)
    for iid in sorted(images, key=lambda k: (str(type(k)), k)):
        img = images[iid]
        file_path = _resolve_coco_image(root, split, str(img["file_name"]))
        if file_path is None:
            index.problems.append(Problem(path, f"image {iid}: file {img['file_name']} not found", code="missing_image"))
            index.dropped += 1
            continue
        if iid in bad_images:
            index.dropped += 1
            continue
        anns = per_image[iid]
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        area = np.asarray([a.get("area", float(a["bbox"][2]) * float(a["bbox"][3])) for a in anns], dtype=np.float32)
        index.samples.append(
            DetSample(
                path=file_path,
                image_id=int(iid) if isinstance(iid, int) else len(index.samples),
                labels=np.asarray([class_of[a["category_id"]] for a in anns], dtype=np.int64),
                boxes=xyxy,
                normalized=False,
                iscrowd=np.asarray([1 if a.get("iscrowd") else 0 for a in anns], dtype=np.uint8),
                area=area,
            )
        )
    return index, class_ids


def _coco_box_problem(ann: dict[str, Any], img: dict[str, Any], class_of: dict[Any, int]) -> str | None:
    if ann.get("category_id") not in class_of:
        return f"category_id {ann.get('category_id')} is not a known category"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return "bbox must be [x, y, width, height]"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return "bbox values must be numbers"
    if not all(np.isfinite([x, y, w, h])):
        return "bbox values must be finite"
    if w <= 0 or h <= 0:
        return "bbox width and height must be > 0"
    width, height = img.get("width"), img.get("height")
    tol = 1.0  # COCO boxes are often rounded outward by up to a pixel
    if x < -tol or y < -tol or (isinstance(width, (int, float)) and x + w > width + tol) or (
        isinstance(height, (int, float)) and y + h > height + tol
    ):
        return f"box {bbox} outside the image ({width}x{height})"
    return None


# --- IMAGE_FOLDER -----------------------------------------------------------------------------


def read_image_folder(root: str, split: str, class_names: list[str] | None = None) -> SplitIndex:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"image-folder split '{split}' has no folder {split_dir}")
    found = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    if class_names is None:
        class_names = found
    if not class_names:
        raise DatasetError(f"{split_dir} has no class folders")
    index = SplitIndex(split, list(class_names))
    class_of = {name: i for i, name in enumerate(class_names)}
    for name in sorted(os.listdir(split_dir)):
        full = os.path.join(split_dir, name)
        if os.path.isfile(full):
            index.problems.append(Problem(full, "file outside a class folder", code="stray_file"))
    for name in found:
        paths = _list_images(os.path.join(split_dir, name))
        if name not in class_of:
            index.problems.append(
                Problem(os.path.join(split_dir, name), f"class '{name}' is not in the training classes", code="unknown_class")
            )
            index.dropped += len(paths)
            continue
        for p in paths:
            index.samples.append(ClsSample(p, class_of[name]))
    return index


# --- one entry point ----------------------------------------------------------------------------


def read_splits(root: str, fmt: str, train_split: str, val_split: str) -> tuple[SplitIndex, SplitIndex]:
    """Both splits with a shared class list (taken from the training split)."""
    if fmt == "yolo":
        return read_yolo(root, train_split), read_yolo(root, val_split)
    if fmt == "coco":
        train, class_ids = read_coco(root, train_split)
        val, _ = read_coco(root, val_split, class_ids)
        return train, val
    if fmt == "image_folder":
        train = read_image_folder(root, train_split)
        return train, read_image_folder(root, val_split, train.class_names)
    raise DatasetError(f"unknown dataset format {fmt}")


def list_splits(root: str, fmt: str) -> list[str]:
    """Splits present on disk, for validate-dataset."""
    if fmt == "yolo":
        base = os.path.join(root, "images")
        return sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))) if os.path.isdir(base) else []
    if fmt == "coco":
        base = os.path.join(root, "annotations")
        if not os.path.isdir(base):
            return []
        return sorted(n[len("instances_") : -len(".json")] for n in os.listdir(base) if n.startswith("instances_") and n.endswith(".json"))
    if fmt == "image_folder":
        return sorted(
            d
            for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
        )
    raise DatasetError(f"unknown dataset format {fmt}")
