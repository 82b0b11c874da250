"""The training batch ring (datasets/batch_ring.py): the same batches as the stock DataLoader,
slot reuse that never overwrites a batch still in use, and the trainer's choice of loader.
(Its page-locked copies to the GPU run in trainers/bench/gpu_bench.py on the GPU machine.)"""

import numpy as np
import pytest
import torch

from cvtrain import settings
from cvtrain.config import TrainingConfig
from cvtrain.datasets.batch_ring import BatchRing, RingLoader
from cvtrain.datasets.formats import read_splits
from cvtrain.datasets.loading import ClassificationDataset, DetectionDataset, EpochBatchSampler, make_loader
from cvtrain.registry import resolve_trainer


def _snapshot(batch):
    """A deep copy: ring images on the CPU are a view of a slot that is refilled later."""
    out = {"size": batch["size"], "bad": list(batch["bad"])}
    if batch["size"]:
        out["images"] = batch["images"].clone()
        if "labels" in batch:
            out["labels"] = batch["labels"].clone()
        else:
            t = batch["targets"]
            out["targets"] = (t["boxes"].clone(), t["labels"].clone(), list(t["counts"]))
    return out


def _assert_same(a, b):
    assert a["size"] == b["size"] and a["bad"] == b["bad"]
    assert torch.equal(a["images"], b["images"]) and a["images"].dtype == torch.uint8
    if "labels" in a:
        assert torch.equal(a["labels"], b["labels"]) and a["labels"].dtype == torch.int64
    else:
        assert torch.equal(a["targets"][0], b["targets"][0]) and torch.equal(a["targets"][1], b["targets"][1])
        assert a["targets"][2] == b["targets"][2]


@pytest.mark.parametrize("kind", ["detection", "classification"])
@pytest.mark.parametrize("workers", [0, 2])
def test_ring_yields_the_stock_loaders_batches(datasets, kind, workers):
    if kind == "detection":
        train, _ = read_splits(datasets["yolo"], "yolo", "train", "val")
        ds = DetectionDataset(train.samples, 48, train=True, augment=True, seed=3)
    else:
        train, _ = read_splits(datasets["folder"], "image_folder", "train", "val")
        ds = ClassificationDataset(train.samples, 32, train=True, augment=True, seed=3)

    def sampler():
        s = EpochBatchSampler(len(ds), 3, seed=3, shuffle=True, drop_last=True)
        s.set_epoch(0, 1, through_epoch=2)  # from batch 1 of epoch 0 through epoch 2
        return s

    stock = [_snapshot(b) for b in make_loader(ds, sampler(), workers, pin_memory=False)]
    ring_loader = RingLoader(ds, sampler(), workers, 3, (3, ds.image_size, ds.image_size), torch.device("cpu"))
    # More batches than slots: every slot is refilled at least once.
    assert len(stock) > ring_loader.ring.count
    mine = [_snapshot(b) for b in ring_loader]
    assert len(mine) == len(stock)
    for a, b in zip(mine, stock):
        _assert_same(a, b)
    # A second iteration (a resume or a new epoch makes one) starts over cleanly.
    again = [_snapshot(b) for b in ring_loader]
    assert len(again) == len(stock)
    _assert_same(again[-1], stock[-1])


def test_a_ring_batch_stays_intact_until_spare_more_batches_are_taken(datasets):
    train, _ = read_splits(datasets["folder"], "image_folder", "train", "val")
    ds = ClassificationDataset(train.samples, 32, train=True, augment=True, seed=3)
    s = EpochBatchSampler(len(ds), 4, seed=3, shuffle=True, drop_last=True)
    s.set_epoch(0, 0, through_epoch=3)
    it = iter(RingLoader(ds, s, 2, 4, (3, 32, 32), torch.device("cpu")))
    for _ in range(5):
        next(it)
    held = next(it)
    copy = held["images"].clone()
    for _ in range(settings.RING_SPARE_SLOTS - 1):
        next(it)
    # The view still holds its batch: its slot is refilled only once the next batch is taken.
    assert torch.equal(held["images"], copy)


def test_a_worker_refuses_a_slot_still_in_use():
    ring = BatchRing(2, 2, (3, 8, 8), torch.device("cpu"))
    item = {"image": torch.full((3, 8, 8), 7, dtype=torch.uint8), "label": 1}
    record = ring.fill(0, [item, item])
    assert record["slot"] == 0 and record["size"] == 2 and record["labels"].tolist() == [1, 1]
    assert isinstance(record["labels"], np.ndarray)  # pickled by value, no shared-memory handle
    with pytest.raises(RuntimeError, match="slot 0 is still in use"):
        ring.fill(0, [item])
    ring.release(0)
    assert ring.fill(0, [item])["size"] == 1
    # A slot an earlier iteration filled (a stale batch, never handed out) may be refilled.
    assert ring.fill(0, [item, item], generation=1)["size"] == 2
    with pytest.raises(RuntimeError, match="slot 0 is still in use"):
        ring.fill(0, [item], generation=1)
    with pytest.raises(RuntimeError, match=r"images of shape \(3, 8, 8\), the dataset gave \(3, 9, 9\)"):
        ring.fill(1, [{"image": torch.zeros((3, 9, 9), dtype=torch.uint8), "label": 0}])


def _setup(datasets, tmp_path, monkeypatch, ring_env=None, trainer_cls=None):
    if ring_env is not None:
        monkeypatch.setenv("CVTRAIN_BATCH_RING", ring_env)
    cfg = TrainingConfig.from_dict(
        {
            "task": "classification",
            "architecture": "mobilenet_v3_small",
            "dataset": {"path": datasets["folder"], "format": "image_folder"},
            "output_dir": str(tmp_path / "out"),
            "epochs": 1,
            "batch_size": 4,
            "image_size": 32,
            "device": "cpu",
            "num_workers": 0,
            "export": [],
        }
    )
    trainer = (trainer_cls or resolve_trainer(cfg))(cfg)
    trainer.setup()
    return trainer


def test_trainer_takes_the_ring_for_its_own_datasets_only(datasets, tmp_path, monkeypatch):
    assert isinstance(_setup(datasets, tmp_path, monkeypatch).train_loader, RingLoader)
    stock = _setup(datasets, tmp_path, monkeypatch, ring_env="0").train_loader
    assert isinstance(stock, torch.utils.data.DataLoader)

    base = resolve_trainer(TrainingConfig.from_dict({
        "task": "classification", "architecture": "mobilenet_v3_small", "output_dir": str(tmp_path / "o"),
        "dataset": {"path": datasets["folder"], "format": "image_folder"},
    }))

    class CustomItems(torch.utils.data.Dataset):
        """A custom trainer's dataset: the ring does not know its items."""

        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, key):
            return self.inner[key]

    class CustomTrainer(base):
        def make_dataset(self, samples, train):
            return CustomItems(super().make_dataset(samples, train))

    custom = _setup(datasets, tmp_path, monkeypatch, trainer_cls=CustomTrainer).train_loader
    assert isinstance(custom, torch.utils.data.DataLoader)
    batch = next(iter(custom))
    assert batch["images"].shape == (4, 3, 32, 32)


def test_a_new_iteration_while_batches_are_in_flight(datasets):
    """A new iterator over persistent workers first lets them finish the batches the old one
    had sent ahead; those must not take the slots the new iteration fills."""
    train, _ = read_splits(datasets["folder"], "image_folder", "train", "val")
    ds = ClassificationDataset(train.samples, 32, train=True, augment=True, seed=3)

    def sampler():
        s = EpochBatchSampler(len(ds), 4, seed=3, shuffle=True, drop_last=True)
        s.set_epoch(1, 0, through_epoch=2)
        return s

    stock = [_snapshot(b) for b in make_loader(ds, sampler(), 2, pin_memory=False)]
    ring_loader = RingLoader(ds, sampler(), 2, 4, (3, 32, 32), torch.device("cpu"))
    it = iter(ring_loader)
    for _ in range(3):  # the loader has sent lookahead batches beyond these
        next(it)
    mine = [_snapshot(b) for b in ring_loader]
    assert len(mine) == len(stock)
    for a, b in zip(mine, stock):
        _assert_same(a, b)
