"""Readers (YOLO, COCO, image folder), the generator, validation, augmentation determinism,
the resumable sampler, and corrupt-sample handling."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import cli

from cvtrain.config import TrainingConfig
from cvtrain.datasets.formats import read_splits
from cvtrain.datasets.loading import DetectionDataset, EpochBatchSampler, collate, make_loader, unpack_targets
from cvtrain.datasets.shapes import CLASSES, make_shapes
from cvtrain.datasets.validate import validate_dataset
from cvtrain.events import EventEmitter
from cvtrain.registry import resolve_trainer


def tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generator_is_deterministic_and_writes_jpeg(tmp_path):
    a = make_shapes(str(tmp_path / "a"), "coco", 12, seed=3, size=64)
    make_shapes(str(tmp_path / "b"), "coco", 12, seed=3, size=64)
    make_shapes(str(tmp_path / "c"), "coco", 12, seed=4, size=64)
    assert a["splits"] == {"train": 9, "val": 3}
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    with open(tmp_path / "a" / "images" / "train" / "img_00000.jpg", "rb") as fh:
        assert fh.read(3) == b"\xff\xd8\xff"


def test_cli_make_dataset_then_validate(tmp_path):
    out = tmp_path / "ds"
    proc = cli("make-dataset", "shapes", "--out", out, "--format", "yolo", "--images", 8, "--seed", 1, "--size", 64)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["splits"] == {"train": 6, "val": 2}
    proc = cli("validate-dataset", out, "--format", "yolo")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["valid"] and report["classes"] == list(CLASSES)
    assert report["splits"]["train"]["images"] == 6 and report["splits"]["val"]["images"] == 2


@pytest.mark.parametrize("name,fmt", [("yolo", "yolo"), ("coco", "coco"), ("folder", "image_folder")])
def test_readers(datasets, name, fmt):
    train, val = read_splits(datasets[name], fmt, "train", "val")
    assert train.class_names == list(CLASSES) == val.class_names
    assert not train.problems and not val.problems
    expected = {"yolo": (30, 10), "coco": (30, 10), "folder": (72, 24)}[name]
    assert (len(train.samples), len(val.samples)) == expected
    if fmt != "image_folder":
        assert all(1 <= len(s.labels) <= 3 for s in train.samples)
    else:
        # The folder is the class.
        assert all(os.path.basename(os.path.dirname(s.path)) == CLASSES[s.label] for s in train.samples)


def test_yolo_and_coco_readers_agree_on_boxes(datasets):
    """Both layouts of the same generated images give the same pixel ground truth."""
    out = []
    for name in ("yolo", "coco"):
        _, val = read_splits(datasets[name], name, "train", "val")
        ds = DetectionDataset(val.samples, 96, train=False, augment=False, seed=0)
        out.append([ds[i]["meta"] for i in range(len(ds))])
    for y, c in zip(*out):
        assert np.array_equal(y["gt_labels"], c["gt_labels"])
        assert np.allclose(y["gt_boxes"], c["gt_boxes"], atol=1e-3)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def corrupt_jpeg(path):
    with open(path, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0 this is not a jpeg")


def test_yolo_problems_are_reported_with_file_and_line(tmp_path):
    root = tmp_path / "y"
    make_shapes(str(root), "yolo", 8, seed=2, size=64)
    lbl = root / "labels" / "train"
    write(lbl / "img_00000.txt", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")  # class out of range, line 2
    write(lbl / "img_00001.txt", "0 0.5 0.5 0.2\n")  # four values
    write(lbl / "img_00002.txt", "1 0.95 0.5 0.3 0.2\n")  # box leaves the image
    write(lbl / "img_00003.txt", "a b c d e\n")
    write(lbl / "ghost.txt", "0 0.5 0.5 0.1 0.1\n")  # label without image
    corrupt_jpeg(root / "images" / "train" / "img_00004.jpg")
    report = validate_dataset(str(root), "yolo")
    assert not report["valid"]
    found = {(os.path.basename(p["path"]), p["line"], p["code"]): p["message"] for p in report["problems"]}
    assert "out of range" in found[("img_00000.txt", 2, "bad_label")]
    assert "expected 5 values" in found[("img_00001.txt", 1, "bad_label")]
    assert "outside 0..1" in found[("img_00002.txt", 1, "bad_label")]
    assert "numbers" in found[("img_00003.txt", 1, "bad_label")]
    assert "without image" in found[("ghost.txt", None, "orphan_label")]
    assert "does not decode" in found[("img_00004.jpg", None, "bad_image")]
    assert report["splits"]["train"]["skipped"] == 5
    proc = cli("validate-dataset", root, "--format", "yolo")
    assert proc.returncode == 3


def test_coco_problems(tmp_path):
    root = tmp_path / "c"
    make_shapes(str(root), "coco", 8, seed=2, size=64)
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    doc["images"].append(dict(doc["images"][0]))  # duplicate image id
    doc["annotations"][0]["category_id"] = 99
    doc["annotations"][1]["bbox"] = [50, 50, 40, 40]  # outside the 64x64 image
    doc["annotations"].append(dict(doc["annotations"][2]))  # duplicate annotation id
    doc["images"].append({"id": 1000, "file_name": "missing.jpg", "width": 64, "height": 64})
    path.write_text(json.dumps(doc))
    report = validate_dataset(str(root), "coco", check_images=False)
    messages = " | ".join(p["message"] for p in report["problems"])
    assert "duplicate image id 1" in messages
    assert "category_id 99 is not a known category" in messages
    assert "outside the image" in messages
    assert "duplicate annotation id" in messages
    assert "missing.jpg not found" in messages


def test_image_folder_problems(tmp_path):
    root = tmp_path / "f"
    make_shapes(str(root), "image_folder", 12, seed=2, size=64)
    write(root / "train" / "notes.txt", "stray")
    os.makedirs(root / "val" / "hexagon")
    shutil.copy(next((root / "val").rglob("*.jpg")), root / "val" / "hexagon" / "x.jpg")
    report = validate_dataset(str(root), "image_folder")
    codes = {p["code"] for p in report["problems"]}
    assert {"stray_file", "unknown_class"} <= codes


def test_augmentation_depends_on_seed_epoch_index_not_workers(datasets):
    train, _ = read_splits(datasets["yolo"], "yolo", "train", "val")
    ds = DetectionDataset(train.samples[:8], 64, train=True, augment=True, seed=11)

    def load(workers, epoch):
        sampler = EpochBatchSampler(len(ds), 4, seed=11, shuffle=True, drop_last=True)
        sampler.set_epoch(epoch)
        loader = make_loader(ds, sampler, workers, pin_memory=False)
        return [b for b in loader]

    a, b = load(0, 0), load(2, 0)
    for x, y in zip(a, b):
        assert torch.equal(x["images"], y["images"])
        assert x["targets"]["counts"] == y["targets"]["counts"]
        assert torch.equal(x["targets"]["boxes"], y["targets"]["boxes"])
    other_epoch = load(0, 1)
    assert not all(torch.equal(x["images"], y["images"]) for x, y in zip(a, other_epoch))
    for batch in a:
        assert batch["images"].dtype == torch.uint8 and batch["images"].shape[1:] == (3, 64, 64)
        for t in unpack_targets(batch["targets"]):
            boxes = t["boxes"]
            assert ((boxes >= 0) & (boxes <= 64)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            assert (t["labels"] >= 1).all()


def test_color_jitter_equals_the_three_imageenhance_blends_in_any_order():
    """color_jitter composes PIL's brightness, contrast and saturation blends into one affine
    pass; away from clipping it must match chaining ImageEnhance in every order, up to the
    chain's own rounding: each PIL blend truncates to uint8 (up to 1 below the exact value,
    three times), Contrast rounds its mean grey to an integer, and color_jitter rounds once
    (half a level): at most 4 levels apart."""
    import itertools

    from PIL import Image, ImageEnhance

    from cvtrain.datasets.transforms import color_jitter

    # Mid-range pixels and the default strength: no blend of the chain clips.
    pixels = np.random.default_rng(5).integers(96, 160, size=(48, 40, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    for seed in range(6):
        b, c, s = np.random.default_rng(seed).uniform(0.75, 1.25, size=3)
        mine = np.asarray(color_jitter(img, np.random.default_rng(seed), 0.25)).astype(int)
        assert mine.shape == pixels.shape
        blends = {0: (ImageEnhance.Brightness, b), 1: (ImageEnhance.Contrast, c), 2: (ImageEnhance.Color, s)}
        for order in itertools.permutations(range(3)):
            ref = img
            for i in order:
                op, factor = blends[i]
                ref = op(ref).enhance(float(factor))
            assert np.abs(np.asarray(ref).astype(int) - mine).max() <= 4, (seed, order)
        # And it did change the image: the factors are not all 1.
        assert np.abs(mine - pixels.astype(int)).max() > 5
    # Clipped, not wrapped: a white image brightened stays white.
    white = Image.new("RGB", (8, 8), (255, 255, 255))
    rng = np.random.default_rng(0)
    while True:  # a draw that brightens and keeps contrast and saturation near 1 is enough
        state = rng.bit_generator.state
        if rng.uniform(0.6, 1.4, size=3)[0] > 1.2:
            break
    rng.bit_generator.state = state
    assert np.asarray(color_jitter(white, rng, 0.4)).min() >= 250


def test_sampler_resumes_mid_epoch():
    s = EpochBatchSampler(23, 4, seed=5, shuffle=True, drop_last=True)
    assert s.batches_per_epoch() == 5 and len(s) == 5
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=2)
    assert list(s) == full[2:] and len(s) == 3
    s.set_epoch(4)
    assert list(s) != full
    capped = EpochBatchSampler(23, 4, seed=5, shuffle=True, drop_last=True, max_batches=2)
    capped.set_epoch(3)
    assert list(capped) == full[:2]
    # One iteration through later epochs: each epoch's batches as if iterated alone.
    s.set_epoch(3, start_batch=2, through_epoch=5)
    s4, s5 = EpochBatchSampler(23, 4, seed=5, shuffle=True, drop_last=True), EpochBatchSampler(23, 4, seed=5, shuffle=True, drop_last=True)
    s4.set_epoch(4)
    s5.set_epoch(5)
    assert list(s) == full[2:] + list(s4) + list(s5) and len(s) == 3 + 5 + 5
    # Samples of one epoch never repeat.
    flat = [i for batch in full for i, _ in batch]
    assert len(set(flat)) == len(flat) == 20


def test_collate_drops_corrupt_samples(datasets, tmp_path):
    train, _ = read_splits(datasets["coco"], "coco", "train", "val")
    samples = train.samples[:3]
    broken = tmp_path / "broken.jpg"
    corrupt_jpeg(broken)
    samples[1] = type(samples[1])(**{**vars(samples[1]), "path": str(broken)})
    ds = DetectionDataset(samples, 64, train=True, augment=False, seed=0)
    batch = collate([ds[i] for i in range(3)])
    assert batch["size"] == 2 and batch["images"].shape[0] == 2
    assert [b[0] for b in batch["bad"]] == [1] and str(broken) == batch["bad"][0][1]


def folder_with_corrupt(tmp_path, n_bad):
    root = tmp_path / "cls"
    make_shapes(str(root), "image_folder", 24, seed=9, size=48)
    for path in sorted((root / "train").rglob("*.jpg"))[:n_bad]:
        corrupt_jpeg(path)
    return root


def corrupt_run(tmp_path, root, **over):
    raw = {
        "task": "classification",
        "architecture": "resnet18",
        "dataset": {"path": str(root), "format": "image_folder"},
        "output_dir": str(tmp_path / "out"),
        "epochs": 1,
        "batch_size": 6,
        "image_size": 32,
        "num_workers": 0,
        "export": [],
    }
    raw.update(over)
    cfg = TrainingConfig.from_dict(raw)
    events = EventEmitter(None, keep=True)
    return resolve_trainer(cfg)(cfg, events).fit(), events.events


def test_corrupt_images_are_skipped_and_counted(tmp_path, check_events):
    result, events = corrupt_run(tmp_path, folder_with_corrupt(tmp_path, 1), max_corrupt_fraction=0.1)
    assert result.status == "completed", result.error
    check_events(events)
    warnings = [e for e in events if e["type"] == "warning" and e["code"] == "corrupt_images"]
    assert len(warnings) == 1 and warnings[0]["count"] == 1 and "do not decode" in warnings[0]["message"]


def test_too_many_corrupt_images_fail_the_run(tmp_path, check_events):
    result, events = corrupt_run(tmp_path, folder_with_corrupt(tmp_path, 4), max_corrupt_fraction=0.1)
    assert result.status == "failed" and result.exit_code == 3
    failed = check_events(events)[-1]
    assert failed["type"] == "failed" and failed["error_type"] == "DatasetError"
    assert "max_corrupt_fraction=0.1" in failed["message"]


def test_bad_labels_past_threshold_fail_before_training(tmp_path, check_events):
    root = tmp_path / "y"
    make_shapes(str(root), "yolo", 12, seed=2, size=64)
    for i in range(3):
        write(root / "labels" / "train" / f"img_{i:05d}.txt", "9 0.5 0.5 0.1 0.1\n")
    raw = {
        "task": "object-detection",
        "architecture": "ssdlite320_mobilenet_v3_large",
        "dataset": {"path": str(root), "format": "yolo"},
        "output_dir": str(tmp_path / "out"),
        "num_workers": 0,
        "max_corrupt_fraction": 0.2,
    }
    cfg = TrainingConfig.from_dict(raw)
    events = EventEmitter(None, keep=True)
    result = resolve_trainer(cfg)(cfg, events).fit()
    assert result.exit_code == 3
    kinds = [(e["type"], e.get("code")) for e in check_events(events.events)]
    assert kinds == [("warning", "skipped_labels"), ("failed", None)]
    assert "3 of 9 images have bad labels" in events.events[-1]["message"]


def test_collate_packs_targets_and_unpack_restores_them():
    images = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 3
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 6.0]]), torch.zeros((0, 4)), torch.tensor([[2.0, 2.0, 7.0, 7.0]])]
    labels = [torch.tensor([1, 2]), torch.zeros((0,), dtype=torch.int64), torch.tensor([3])]
    batch = collate([{"image": i, "boxes": b, "labels": l} for i, b, l in zip(images, boxes, labels)])
    assert batch["targets"]["counts"] == [2, 0, 1] and batch["targets"]["boxes"].shape == (3, 4)
    out = unpack_targets(batch["targets"])
    assert len(out) == 3
    for got, b, l in zip(out, boxes, labels):
        assert torch.equal(got["boxes"], b) and torch.equal(got["labels"], l)
