"""The training loader: DataLoader workers write each batch's images into a ring of buffers
in shared memory, page-locked when training on CUDA, and send only the slot's number and the
labels back.

Why: with the stock DataLoader a batch reaches the GPU through a fresh shared-memory segment
per tensor (made and filled by the worker, its file descriptor passed over a socket to the
training process and mapped there), then a copy into page-locked memory by the pin-memory
thread, then the copy to the device. That per-batch work runs in the training process, under
the GIL, beside the thread that launches the kernels: on the GPU machine resnet18 trained at
~71% of the speed of the same train_step fed one batch over and over (bench/RESULTS.md). Here
the training process receives a few small objects per batch and starts one asynchronous copy
from the ring.

Reuse of a slot: the DataLoader keeps exactly `prefetch_factor * num_workers` batches in
flight: the batch `m + lookahead` is sent to a worker while batch `m` is handed out. The ring
has `lookahead + spare` slots, so that worker writes the slot batch `m - spare` used; before
asking for batch `m`, the iterator waits for that batch's copy to the device to finish (on
the CPU the trainer is done with it, it took it `spare` steps ago) and marks the slot free.
A worker refuses to write a slot not marked free, so a broken assumption fails the run with
a message instead of training on overwritten images.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import compat, settings
from .loading import ClassificationDataset, DetectionDataset, EpochBatchSampler, collate_labels, split_corrupt, worker_options


class BatchRing:
    """`count` batch buffers of uint8 images [batch_size, *image_shape] in shared memory."""

    def __init__(self, count: int, batch_size: int, image_shape: tuple[int, ...], device: torch.device):
        self.count = count
        self.image_shape = tuple(image_shape)
        self.device = device
        self.images = torch.empty((count, batch_size, *image_shape), dtype=torch.uint8).share_memory_()
        # 1: a worker may fill the slot; 0: filled and not yet released by the training process.
        self.free = torch.ones(count, dtype=torch.int8).share_memory_()
        # Number of the current iteration (a batch requested by an earlier one is stale), and
        # the iteration whose batch each slot last held.
        self.generation = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.filled_by = torch.zeros(count, dtype=torch.int64).share_memory_()
        self.copies: list[Any] = [None] * count  # CUDA event after each slot's copy to the device
        self._events: list[Any] = [None] * count  # one per slot, recorded again at each use
        # None until tried (RingLoader does, once its workers exist); False on the CPU.
        self.page_locked: bool | None = None if device.type == "cuda" else False

    # --- in a worker -------------------------------------------------------------------------

    def fill(self, slot: int, items: list[Any], generation: int = 0) -> dict[str, Any]:
        """`collate` for the ring: images into `slot`, everything else back as small objects
        (numpy arrays pickle by value: no shared-memory segment per tensor).

        A slot not released yet may still be filled when an earlier iteration filled it: that
        was a stale batch, finished before this iteration's first batch was sent and never
        handed out."""
        if int(self.free[slot]) != 1 and int(self.filled_by[slot]) == generation:
            raise RuntimeError(
                f"batch ring slot {slot} is still in use by the training process; the DataLoader "
                "sent more batches ahead than prefetch_factor * num_workers"
            )
        self.free[slot] = 0
        self.filled_by[slot] = generation
        good, bad = split_corrupt(items)
        out: dict[str, Any] = {"slot": slot, "size": len(good), "bad": bad}
        for j, it in enumerate(good):
            image = it["image"]
            if tuple(image.shape) != self.image_shape:
                raise RuntimeError(f"batch ring holds images of shape {self.image_shape}, the dataset gave {tuple(image.shape)}")
            self.images[slot, j].copy_(image)
        if good:
            out.update(collate_labels(good, as_numpy=True))
        return out

    # --- in the training process -------------------------------------------------------------

    def release(self, slot: int) -> None:
        event = self.copies[slot]
        if event is not None:
            event.synchronize()
            self.copies[slot] = None
        self.free[slot] = 1

    def release_all(self) -> None:
        for slot in range(self.count):
            self.release(slot)

    def close(self) -> None:
        """Waits for the last copies and unlocks the pages (before the memory is unmapped)."""
        self.release_all()
        if self.page_locked:
            compat.page_unlock(self.images)
            self.page_locked = False

    def batch(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The trainer's batch dict. On CUDA its tensors are already on the device (copies
        started here, asynchronous from page-locked memory), so the trainer's own `.to(device)`
        does nothing; on the CPU the images are a view of the slot."""
        slot, size = raw["slot"], raw["size"]
        batch: dict[str, Any] = {"bad": raw["bad"], "size": size}
        if not size:
            return batch
        cuda = self.device.type == "cuda"
        images = self.images[slot, :size]
        if cuda:
            # Without page-locking, pin_memory() copies the batch first (what the stock
            # DataLoader's pin-memory thread does), so the copy to the device stays queued.
            images = (images if self.page_locked else images.pin_memory()).to(self.device, non_blocking=True)
            if self._events[slot] is None:
                self._events[slot] = torch.cuda.Event()
            self._events[slot].record()
            self.copies[slot] = self._events[slot]
        batch["images"] = images
        if "labels" in raw:
            batch["labels"] = self._small(raw["labels"], cuda)
        else:
            t = raw["targets"]
            batch["targets"] = {"boxes": self._small(t["boxes"], cuda), "labels": self._small(t["labels"], cuda), "counts": t["counts"]}
            if "meta" in raw:
                batch["meta"] = raw["meta"]
        return batch

    def _small(self, array: np.ndarray, cuda: bool) -> torch.Tensor:
        t = torch.from_numpy(array)
        # From pageable memory a copy to the device waits for the GPU to finish its queue;
        # from page-locked memory it is queued like the images.
        return t.pin_memory().to(self.device, non_blocking=True) if cuda else t


class _RingDataset(Dataset):
    """Maps (iteration, sequence number, keys of one batch) to the ring's record of that batch."""

    def __init__(self, dataset: Dataset, ring: BatchRing):
        self.dataset = dataset
        self.ring = ring

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, list[Any]]) -> dict[str, Any]:
        generation, seq, keys = key
        if generation != int(self.ring.generation[0]):
            # Sent ahead by an iteration that was replaced (persistent workers finish those
            # before a new iteration's first batch is sent, and the DataLoader drops what they
            # return): its slot now belongs to the new iteration, so neither decode nor write.
            # (A worker that checked just before the switch still writes; `fill` allows that.)
            return {"stale": True}
        return self.ring.fill(seq % self.ring.count, [self.dataset[k] for k in keys], generation)


class _SequencedBatches(Sampler):
    """The batch sampler's batches, numbered from 0 in every iteration, with the iteration's
    number."""

    def __init__(self, batches: EpochBatchSampler, ring: BatchRing):
        self.batches = batches
        self.ring = ring

    def __iter__(self) -> Iterator[tuple[int, int, list[Any]]]:
        generation = int(self.ring.generation[0])
        return ((generation, seq, keys) for seq, keys in enumerate(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def _as_is(record: Any) -> Any:
    return record


class RingLoader:
    """Iterable like a DataLoader over `sampler`'s batches, yielding the trainer's batch dicts."""

    def __init__(self, dataset: Dataset, sampler: EpochBatchSampler, num_workers: int, batch_size: int, image_shape: tuple[int, ...], device: torch.device):
        self.lookahead = settings.PREFETCH_FACTOR * num_workers
        self.ring = BatchRing(self.lookahead + settings.RING_SPARE_SLOTS, batch_size, image_shape, device)
        self.loader = DataLoader(
            _RingDataset(dataset, self.ring),
            sampler=_SequencedBatches(sampler, self.ring),
            batch_size=None,
            collate_fn=_as_is,
            pin_memory=False,
            **worker_options(num_workers),
        )

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Ends the workers and releases the ring; the trainer calls it at the end of a run."""
        self.loader = None  # its iterator holds the persistent workers
        self.ring.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A new iteration first drains the previous one's batches (persistent workers; they
        # are stale by then and skipped) and then sends `lookahead` new ones at once: every
        # slot must be free before.
        self.ring.release_all()
        self.ring.generation += 1
        it = iter(self.loader)
        if self.ring.page_locked is None:
            # Once the workers exist: a driver may hide page-locked memory from processes
            # forked after it was locked, and the workers write these pages.
            self.ring.page_locked = compat.page_lock(self.ring.images)
        return _RingIterator(self, it)


class _RingIterator:
    def __init__(self, owner: RingLoader, it: Iterator[dict[str, Any]]):
        self.ring = owner.ring
        self.lookahead = owner.lookahead
        self.it = it
        self.seq = 0

    def __iter__(self) -> "_RingIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        # Handing out batch `seq` makes the DataLoader send batch seq + lookahead to a worker.
        self.ring.release((self.seq + self.lookahead) % self.ring.count)
        raw = next(self.it)
        self.seq += 1
        return self.ring.batch(raw)


def ring_supported(dataset: Dataset) -> bool:
    """The ring knows the item layout of cvtrain's own datasets; other datasets (a custom
    trainer's) get the stock DataLoader."""
    return isinstance(dataset, (ClassificationDataset, DetectionDataset))
