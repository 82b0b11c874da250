"""Datasets, the resumable batch sampler, collation and the DataLoader factory."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import settings
from .formats import ClsSample, DetSample
from .transforms import decode, letterbox_detection, resize_classification, sample_rng, to_tensor


@dataclass
class Corrupt:
    """Stands in for a sample whose image could not be decoded; counted, then skipped."""

    index: int
    path: str
    message: str


def _key(key: Any) -> tuple[int, int]:
    # The sampler hands out (index, epoch) so augmentation can be seeded per epoch without
    # telling workers the epoch (persistent workers keep their own copy of the dataset).
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), 0


class DetectionDataset(Dataset):
    def __init__(self, samples: Sequence[DetSample], image_size: int, train: bool, augment: bool, seed: int):
        self.samples = list(samples)
        self.image_size = image_size
        self.train = train
        self.augment = augment and train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = _key(key)
        s = self.samples[index]
        try:
            img, (ow, oh) = decode(s.path, self.image_size)
        except Exception as exc:  # PIL raises many types for broken files
            return Corrupt(index, s.path, f"{type(exc).__name__}: {exc}")
        if s.normalized:
            cx, cy, bw, bh = s.boxes.T if len(s.boxes) else (np.zeros(0, np.float32),) * 4
            orig = np.stack([(cx - bw / 2) * ow, (cy - bh / 2) * oh, (cx + bw / 2) * ow, (cy + bh / 2) * oh], axis=1)
        else:
            orig = s.boxes.copy()
        orig = orig.astype(np.float32).reshape(-1, 4)
        dw, dh = img.size
        decoded = orig * np.array([dw / ow, dh / oh, dw / ow, dh / oh], dtype=np.float32)
        rng = sample_rng(self.seed, epoch, index) if self.augment else None
        canvas, boxes, (sx, sy), keep = letterbox_detection(img, decoded, self.image_size, rng, self.augment)
        # Crowd regions are not objects to learn; COCO evaluation still uses them.
        train_keep = keep & (s.iscrowd == 0)
        item: dict[str, Any] = {
            "image": to_tensor(canvas),
            "boxes": torch.from_numpy(boxes[train_keep]).reshape(-1, 4),
            # torchvision detectors reserve label 0 for background.
            "labels": torch.from_numpy(s.labels[train_keep] + 1),
        }
        if not self.train:
            area = s.area if s.area is not None else (orig[:, 2] - orig[:, 0]) * (orig[:, 3] - orig[:, 1])
            item["meta"] = {
                "image_id": s.image_id,
                # Canvas pixels -> original pixels: x / (sx * dw / ow).
                "scale": (sx * dw / ow, sy * dh / oh),
                "gt_boxes": orig,
                "gt_labels": s.labels,
                "gt_iscrowd": s.iscrowd,
                "gt_area": np.asarray(area, dtype=np.float32),
                "orig_size": (ow, oh),
            }
        return item


class ClassificationDataset(Dataset):
    def __init__(self, samples: Sequence[ClsSample], image_size: int, train: bool, augment: bool, seed: int):
        self.samples = list(samples)
        self.image_size = image_size
        self.augment = augment and train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = _key(key)
        s = self.samples[index]
        try:
            img, _ = decode(s.path, self.image_size)
        except Exception as exc:
            return Corrupt(index, s.path, f"{type(exc).__name__}: {exc}")
        rng = sample_rng(self.seed, epoch, index) if self.augment else None
        return {"image": to_tensor(resize_classification(img, self.image_size, rng, self.augment)), "label": s.label}


def split_corrupt(items: list[Any]) -> tuple[list[Any], list[tuple[int, str, str]]]:
    """(decoded items, (index, path, message) of each corrupt one)."""
    good = [it for it in items if not isinstance(it, Corrupt)]
    return good, [(it.index, it.path, it.message) for it in items if isinstance(it, Corrupt)]


def collate_labels(good: list[Any], as_numpy: bool = False) -> dict[str, Any]:
    """The batch's `labels` (classification) or packed `targets` and `meta` (detection), as
    tensors, or as numpy arrays, which cross a process boundary pickled by value."""
    out = (lambda t: t.numpy()) if as_numpy else (lambda t: t)
    if "label" in good[0]:
        return {"labels": out(torch.tensor([it["label"] for it in good], dtype=torch.int64))}
    # Packed: three objects cross the worker -> main process queue instead of two
    # tensors per image (each tensor is its own shared-memory handle to pass and
    # rebuild, and its own host-to-device copy). `unpack_targets` splits them.
    batch: dict[str, Any] = {
        "targets": {
            "boxes": out(torch.cat([it["boxes"] for it in good])),
            "labels": out(torch.cat([it["labels"] for it in good])),
            "counts": [int(it["labels"].shape[0]) for it in good],
        }
    }
    if "meta" in good[0]:
        batch["meta"] = [it["meta"] for it in good]
    return batch


def collate(items: list[Any]) -> dict[str, Any]:
    good, bad = split_corrupt(items)
    batch: dict[str, Any] = {"bad": bad, "size": len(good)}
    if not good:
        return batch
    batch["images"] = torch.stack([it["image"] for it in good])
    batch.update(collate_labels(good))
    return batch
    batch["images"] = torch.stack([it["image"] for it in good])
    if "label" in good[0]:
        batch["labels"] = torch.tensor([it["label"] for it in good], dtype=torch.int64)
    else:
        # Packed: three objects cross the worker -> main process queue instead of two
        # tensors per image (each tensor is its own shared-memory handle to pass and
        # rebuild, and its own host-to-device copy). `unpack_targets` splits them.
        batch["targets"] = {
            "boxes": torch.cat([it["boxes"] for it in good]),
            "labels": torch.cat([it["labels"] for it in good]),
            "counts": [int(it["labels"].shape[0]) for it in good],
        }
        if "meta" in good[0]:
            batch["meta"] = [it["meta"] for it in good]
    return batch


def unpack_targets(packed: dict[str, Any], device: Any = None) -> list[dict[str, torch.Tensor]]:
    """Per-image target dicts from `collate`'s packed form (moved to `device` first, in
    one copy per field, when given)."""
    boxes, labels = packed["boxes"], packed["labels"]
    if device is not None:
        boxes = boxes.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
    counts = packed["counts"]
    return [{"boxes": b, "labels": l} for b, l in zip(boxes.split(counts), labels.split(counts))]


class EpochBatchSampler(Sampler):
    """Batches of (index, epoch) in an order that depends only on (seed, epoch).

    `set_epoch(epoch, start_batch)` makes the next iteration begin at `start_batch`, so
    a run resumed mid-epoch skips the consumed batches without loading them. With
    `through_epoch`, one iteration runs on through the following epochs: the trainer keeps
    one iterator for the whole run, so the workers decode the next epoch's first batches
    while the current epoch's last ones train (and while it validates) instead of every
    epoch starting with the workers idle.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool, drop_last: bool, max_batches: int | None = None):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last and n >= batch_size
        self.max_batches = max_batches
        self.epoch = 0
        self.start_batch = 0
        self.through_epoch: int | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0, through_epoch: int | None = None) -> None:
        self.epoch = epoch
        self.start_batch = start_batch
        self.through_epoch = through_epoch

    def batches_per_epoch(self) -> int:
        full = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        return min(full, self.max_batches) if self.max_batches else full

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch, 0x5A3]).permutation(self.n)

    def _last_epoch(self) -> int:
        return self.epoch if self.through_epoch is None else max(self.epoch, self.through_epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.epoch, self._last_epoch() + 1):
            order = self.order(epoch)
            first = self.start_batch if epoch == self.epoch else 0
            for b in range(first, self.batches_per_epoch()):
                chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield [(int(i), epoch) for i in chunk]

    def __len__(self) -> int:
        epochs = self._last_epoch() - self.epoch + 1
        return max(0, epochs * self.batches_per_epoch() - self.start_batch)


def _worker_init(_worker_id: int) -> None:
    # The main process owns shutdown: on SIGTERM it finishes the step and checkpoints,
    # which needs its workers alive (a signal sent to the process group reaches them too).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve_num_workers(value: Any) -> int:
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, settings.AUTO_MAX_WORKERS))
    return int(value)


def worker_options(num_workers: int) -> dict[str, Any]:
    """DataLoader arguments shared by every cvtrain loader: persistent workers (started once
    per run), prefetching, signal handling, and a private generator (without it, creating an
    iterator draws from the global torch RNG, and a resumed run, which creates one mid-epoch,
    would drift from the original)."""
    options: dict[str, Any] = {"num_workers": num_workers, "generator": torch.Generator()}
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=settings.PREFETCH_FACTOR, worker_init_fn=_worker_init)
    return options


def make_loader(dataset: Dataset, sampler: EpochBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, pin_memory=pin_memory, **worker_options(num_workers))
