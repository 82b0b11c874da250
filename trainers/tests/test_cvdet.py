"""cvdet, the package's own YOLO-style detector: hand-computed assigner and box-loss cases,
post-processing, mosaic, and real CPU training (learning, exact resume, ONNX run by OpenCV)."""

import math
import os
import signal

import numpy as np
import pytest
import torch
from conftest import cli, read_events, write_config

from cvtrain import compat
from cvtrain.config import TrainingConfig
from cvtrain.errors import ConfigError
from cvtrain.events import EventEmitter
from cvtrain.families.cvdet import mosaic_epochs
from cvtrain.families.cvdet.detector import CvDetector, postprocess, postprocess_numpy
from cvtrain.families.cvdet.loss import assign, box_iou_pairwise, detection_loss, dfl_loss
from cvtrain.families.cvdet.model import REG_MAX, CvdetNet, anchor_points
from cvtrain.registry import resolve_trainer

# --- box loss ----------------------------------------------------------------------------------


def test_ciou_of_shifted_squares_is_iou_minus_centre_distance_term():
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 7; enclosing box 3x3 (diagonal^2 18);
    # centres (1,1) and (2,2) (distance^2 2); same aspect ratio, so no aspect term.
    a, b = torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])
    assert box_iou_pairwise(a, b).item() == pytest.approx(1 / 7, abs=1e-6)
    assert box_iou_pairwise(a, b, ciou=True).item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)


def test_ciou_aspect_term():
    # [0,0,2,1] vs [0,0,1,2]: IoU 1/3; enclosing 2x2 (8); centres (1,.5), (.5,1): 0.5;
    # v = 4/pi^2 (atan(1/2) - atan(2))^2, alpha = v / (1 - IoU + v).
    a, b = torch.tensor([0.0, 0, 2, 1]), torch.tensor([0.0, 0, 1, 2])
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    alpha = v / (1 - 1 / 3 + v)
    assert box_iou_pairwise(a, b, ciou=True).item() == pytest.approx(1 / 3 - 0.5 / 8 - alpha * v, abs=1e-5)
    # Identical boxes: CIoU 1, so the box loss 1 - CIoU is 0.
    assert box_iou_pairwise(a, a, ciou=True).item() == pytest.approx(1.0, abs=1e-6)


def test_dfl_is_cross_entropy_against_the_two_nearest_bins():
    # Distance 2.3 strides: bins 2 and 3 with weights 0.7 and 0.3.
    target = torch.full((1, 4), 2.3)
    uniform = torch.zeros(1, 4 * REG_MAX)
    assert dfl_loss(uniform, target).item() == pytest.approx(math.log(REG_MAX), abs=1e-5)
    # A distribution that is exactly 0.7 / 0.3 on those bins: the loss is its entropy.
    logits = torch.full((1, 4, REG_MAX), -1e4)
    logits[..., 2], logits[..., 3] = math.log(0.7), math.log(0.3)
    expected = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert dfl_loss(logits.reshape(1, -1), target).item() == pytest.approx(expected, abs=1e-5)


# --- task-aligned assigner -------------------------------------------------------------------------


def test_assigner_picks_the_best_aligned_cells_inside_the_box():
    # One box [0,0,20,20] of class 1 (of 2); four cells. Alignment s^0.5 * IoU^6:
    #   cell 0 (5,5):   s .5, predicted box = the box (IoU 1)      -> 0.7071
    #   cell 1 (15,15): s .2, predicted [0,0,10,10] (IoU .25)      -> 1.09e-4
    #   cell 2 (25,25): outside the box (never a candidate), although IoU 1 and s .9
    #   cell 3 (5,15):  s .1, predicted [0,0,20,10] (IoU .5)       -> 4.94e-3
    # top-2: cells 0 and 3. Targets: alignment * (best IoU among positives, 1) / (best alignment).
    points = torch.tensor([[5.0, 5], [15, 15], [25, 25], [5, 15]])
    scores = torch.zeros(1, 4, 2)
    scores[0, :, 1] = torch.tensor([0.5, 0.2, 0.9, 0.1])
    scores[0, :, 0] = 0.3
    pred = torch.tensor([[[0.0, 0, 20, 20], [0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 20, 10]]])
    gt_boxes = torch.tensor([[[0.0, 0, 20, 20]]])
    boxes, target, fg, idx = assign(scores, pred, points, torch.tensor([[1]]), gt_boxes, torch.tensor([[True]]), topk=2)
    assert fg.tolist() == [[True, False, False, True]]
    a0 = 0.5**0.5
    a3 = 0.1**0.5 * 0.5**6
    expected = torch.tensor([[[0, 1.0], [0, 0], [0, 0], [0, a3 / a0]]])
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.equal(boxes[0, 0], gt_boxes[0, 0]) and torch.equal(boxes[0, 3], gt_boxes[0, 0])


def test_assigner_gives_a_contested_cell_to_the_box_it_overlaps_most_and_ignores_padding():
    # The cell (15,15) lies inside both boxes; its prediction is box B exactly, so it goes to B
    # (class 0) even though A (class 1) is listed first. The third box is padding.
    points = torch.tensor([[15.0, 15], [2, 2]])
    scores = torch.full((1, 2, 2), 0.5)
    pred = torch.tensor([[[10.0, 10, 30, 30], [0, 0, 16, 16]]])
    gt_boxes = torch.tensor([[[0.0, 0, 20, 20], [10, 10, 30, 30], [0, 0, 40, 40]]])
    labels = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[True, True, False]])
    boxes, target, fg, idx = assign(scores, pred, points, labels, gt_boxes, mask, topk=10)
    assert fg.tolist() == [[True, True]]
    assert idx[0, 0].item() == 1 and target[0, 0, 0].item() == pytest.approx(1.0) and target[0, 0, 1].item() == 0
    # Cell (2,2) is then A's only positive; its predicted box [0,0,16,16] has IoU 256/400 with A,
    # and a box's best-aligned positive gets the best IoU among its positives: 0.64.
    assert idx[0, 1].item() == 0 and target[0, 1, 1].item() == pytest.approx(0.64, abs=1e-5) and target[0, 1, 0].item() == 0


def test_assigner_without_boxes_gives_only_background():
    boxes, target, fg, _ = assign(torch.rand(2, 5, 3), torch.rand(2, 5, 4), torch.rand(5, 2), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert not fg.any() and target.sum() == 0


def test_loss_falls_when_fitting_one_batch():
    torch.manual_seed(0)
    model = CvDetector("cvdet_n", 3).train()
    x = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8, 40, 40]]), "labels": torch.tensor([2])}, {"boxes": torch.tensor([[20.0, 10, 60, 50], [0, 30, 20, 60]]), "labels": torch.tensor([1, 3])}]
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    first = None
    for _ in range(15):
        out = model(x, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else {k: float(v) for k, v in out.items()}
    assert set(out) == {"loss", "box", "cls", "dfl"}
    assert float(out["loss"]) < 0.5 * first["loss"] and float(out["box"]) < first["box"]


# --- decoding and post-processing ------------------------------------------------------------------


def test_anchor_points_follow_the_head_layout():
    sizes = CvdetNet.feature_sizes(64, 64)
    assert sizes == [(8, 8), (4, 4), (2, 2)]
    points, strides = anchor_points(sizes)
    assert points.shape == (84, 2) and strides[:64].eq(8).all() and strides[-4:].eq(32).all()
    # Row-major: the second cell of the first level is x=1.5, y=0.5.
    assert points[1].tolist() == [1.5, 0.5] and points[8].tolist() == [0.5, 1.5]


def test_numpy_postprocessing_selects_what_torch_selects():
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(1, 300, 2, generator=g) * 100
    sizes = torch.rand(1, 300, 2, generator=g) * 30 + 5
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], -1)
    scores = torch.rand(1, 300, 3, generator=g) ** 3
    (ref,) = postprocess(boxes, scores)
    got = postprocess_numpy(boxes[0].numpy(), scores[0].numpy())
    assert len(ref["scores"]) == 100  # capped at DETECTIONS_PER_IMAGE
    np.testing.assert_allclose(got[0], ref["boxes"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], ref["scores"].numpy(), atol=1e-7)
    np.testing.assert_array_equal(got[2], ref["labels"].numpy() - 1)


# --- mosaic ------------------------------------------------------------------------------------


def test_mosaic_is_deterministic_and_off_for_the_last_epochs(datasets):
    from cvtrain.datasets.formats import read_splits
    from cvtrain.families.cvdet.mosaic import MosaicDetectionDataset

    train, _ = read_splits(datasets["yolo"], "yolo", "train", "val")
    assert mosaic_epochs(10) == 8 and mosaic_epochs(3) == 2 and mosaic_epochs(1) == 0
    ds = MosaicDetectionDataset(train.samples, 64, True, True, seed=4, mosaic_epochs=2)
    a, b = ds[(3, 1)], ds[(3, 1)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["image"], ds[(3, 0)]["image"])
    # Mosaics gather objects from four images; every box lies on the canvas and has size.
    counts = [len(ds[(i, 0)]["labels"]) for i in range(len(ds))]
    assert max(counts) > 3
    for i in range(len(ds)):
        item = ds[(i, 0)]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
        boxes = item["boxes"]
        assert ((boxes >= 0) & (boxes <= 64)).all() and (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert item["labels"].min() >= 1 if len(boxes) else True
    # Epoch 2 (the last of 3) is not a mosaic: the plain letterbox augmentation's item.
    plain = super(MosaicDetectionDataset, ds).__getitem__((3, 2))
    assert torch.equal(ds[(3, 2)]["image"], plain["image"])


# --- the family through the trainer --------------------------------------------------------------


def cvdet_config(data, out, **over):
    raw = {
        "task": "object-detection",
        "framework": "cvtrain",
        "architecture": "cvdet_n",
        "dataset": {"path": data, "format": "yolo"},
        "output_dir": str(out),
        "epochs": 3,
        "batch_size": 4,
        "image_size": 64,
        "optimizer": "adamw",
        "learning_rate": 0.002,
        "weight_decay": 0.0005,
        "warmup_epochs": 0.5,
        "num_workers": 1,
        "max_batches_per_epoch": 4,
        "max_val_batches": 2,
        "export": [],
        "seed": 2,
    }
    raw.update(over)
    return TrainingConfig.from_dict(raw)


def fit(cfg, kill_at=None):
    events = EventEmitter(None, keep=True)
    trainer = resolve_trainer(cfg)(cfg, events)
    if kill_at:
        hook, epoch, step = kill_at

        def kill(t):
            if (t.epoch, t.step) == (epoch, step) and not t.stop_requested:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer.add_callback(hook, kill)
    return trainer.fit(), events.events, trainer


def test_unknown_size_is_refused_naming_the_key(datasets, tmp_path):
    with pytest.raises(ConfigError, match="architecture") as info:
        resolve_trainer(cvdet_config(datasets["yolo"], tmp_path, architecture="cvdet_xl"))
    assert "cvdet_n" in str(info.value)


@pytest.fixture(scope="module")
def resume_reference(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("cvdet_ref")
    result, events, _ = fit(cvdet_config(datasets["yolo"], out))
    assert result.status == "completed", result.error
    return out, events


def test_mid_epoch_sigterm_then_resume_equals_the_uninterrupted_run(datasets, tmp_path, resume_reference, check_events):
    """Stopped inside epoch 2 (a mosaic epoch), resumed: the same losses, metrics, weights and
    EMA weights as the run that was never stopped."""
    ref_out, ref_events = resume_reference
    result, events, _ = fit(cvdet_config(datasets["yolo"], tmp_path), kill_at=("on_train_batch_end", 1, 2))
    assert result.status == "stopped"
    stopped = check_events(events)[-1]
    assert (stopped["epoch"], stopped["step"]) == (1, 2)
    result, events, _ = fit(cvdet_config(datasets["yolo"], tmp_path, resume_from="last"))
    assert result.status == "completed", result.error
    check_events(events)
    ref_epochs = {e["epoch"]: e for e in ref_events if e["type"] == "epoch"}
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [2, 3]
    for e in epochs:
        assert e["train_loss"] == pytest.approx(ref_epochs[e["epoch"]]["train_loss"], abs=1e-6)
        assert e["losses"] == pytest.approx(ref_epochs[e["epoch"]]["losses"], abs=1e-6)
        assert e["metrics"] == pytest.approx(ref_epochs[e["epoch"]]["metrics"], abs=1e-6)
    a = compat.load(tmp_path / "checkpoints" / "last.pt")
    b = compat.load(ref_out / "checkpoints" / "last.pt")
    assert a["extra"]["ema"]["updates"] == b["extra"]["ema"]["updates"] == 12
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["extra"]["ema"]["model"][key], b["extra"]["ema"]["model"][key]), key
    # weights/best.pt holds the EMA weights of the best epoch (what validation measured).
    best = compat.load(ref_out / "checkpoints" / "best.pt")
    weights = compat.load(ref_out / "weights" / "best.pt")
    for key in best["model"]:
        assert torch.equal(weights["model"][key], best["extra"]["ema"]["model"][key]), key


def test_bf16_autocast_and_channels_last_train(datasets, tmp_path):
    cfg = cvdet_config(datasets["coco"], tmp_path, dataset={"path": datasets["coco"], "format": "coco"}, amp="bf16", channels_last=True, epochs=1, max_batches_per_epoch=2, num_workers=0)
    result, events, trainer = fit(cfg)
    assert result.status == "completed", result.error
    started = events[0]
    assert started["amp"] == "bf16" and trainer.channels_last
    (epoch,) = [e for e in events if e["type"] == "epoch"]
    assert math.isfinite(epoch["train_loss"]) and set(epoch["losses"]) == {"box", "cls", "dfl"}


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    """A real, short training run through the CLI on a generated shapes set (YOLO layout)."""
    from cvtrain.datasets.shapes import make_shapes

    root = tmp_path_factory.mktemp("cvdet_learn")
    make_shapes(str(root / "data"), "yolo", 96, seed=11, size=96)
    cfg = cvdet_config(
        str(root / "data"), root / "out", epochs=6, batch_size=8, image_size=96, max_batches_per_epoch=None, max_val_batches=None, export=["onnx"], warmup_epochs=1
    )
    path = write_config(root / "run.json", **cfg.to_dict())
    proc = cli("train", "--config", path, "--events", root / "events.jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, read_events(root / "events.jsonl")


def test_loss_falls_and_map50_rises(learning_run, check_events):
    _, events = learning_run
    check_events(events)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) == 6
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    first, last = epochs[0]["metrics"]["mAP50"], epochs[-1]["metrics"]["mAP50"]
    assert last > first + 0.25 and last > 0.3, [e["metrics"]["mAP50"] for e in epochs]


def test_onnx_runs_in_opencv_and_matches_torch_detections(learning_run):
    """The exported graph (outputs before NMS) run by OpenCV's dnn on real validation images,
    then the reference NMS (postprocess_numpy): the detections match those of the torch model
    (EMA weights of weights/best.pt) on the same images, as the export's own verification
    matches them."""
    import cv2

    from cvtrain.datasets.formats import read_splits
    from cvtrain.datasets.loading import DetectionDataset
    from cvtrain import settings
    from cvtrain.export import match_detections

    root, events = learning_run
    (art,) = [e for e in events if e["type"] == "artifact" and e["kind"] == "onnx"]
    assert art["verified"] is True and art["runtime"].startswith("opencv-dnn"), art
    assert "NMS runs after the graph" in art["note"] and art["max_abs_diff"] < 1e-3

    weights = compat.load(root / "out" / "weights" / "best.pt")
    model = CvDetector("cvdet_n", 3)
    model.load_state_dict(weights["model"])
    model.eval()
    _, val = read_splits(str(root / "data"), "yolo", "train", "val")
    ds = DetectionDataset(val.samples, 96, False, False, 0)
    net = cv2.dnn.readNetFromONNX(art["path"])
    compared = 0
    for i in range(6):
        x = ds[i]["image"][None].float() / 255
        with torch.no_grad():
            (ref,) = model(x)
        net.setInput(x.numpy())
        boxes, scores = net.forward(["boxes", "scores"])
        got = postprocess_numpy(boxes[0], scores[0])
        expected = [ref["boxes"].numpy(), ref["scores"].numpy(), ref["labels"].numpy() - 1]
        assert match_detections(got, expected, settings.CVDET_SCORE_THRESH, settings.DETECTIONS_PER_IMAGE) == []
        compared += len(ref["scores"])
    assert compared > 0


def test_detection_matching_tolerates_only_threshold_rounding():
    from cvtrain.export import match_detections

    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], np.float32)
    scores = np.array([0.9, 0.5, 0.0015], np.float32)
    labels = np.array([0, 2, 1])
    ref = [boxes, scores, labels]
    assert match_detections([boxes[[1, 0, 2]], scores[[1, 0, 2]], labels[[1, 0, 2]]], ref, 0.001, 100) == []
    # The last one scores within tolerance of the threshold: rounding may drop it on one side.
    assert match_detections([boxes[:2], scores[:2], labels[:2]], ref, 0.001, 100) == []
    # A confident detection missing, moved, relabelled or rescored is a real difference.
    assert match_detections([boxes[1:], scores[1:], labels[1:]], ref, 0.001, 100)
    assert match_detections([boxes + [[0, 0, 1, 0]], scores, labels], ref, 0.001, 100)
    assert match_detections([boxes, scores, np.array([1, 2, 1])], ref, 0.001, 100)
    assert match_detections([boxes, scores - [0.01, 0, 0], labels], ref, 0.001, 100)
    # In lists cut at max_det, the lowest-scoring place may go either way as well.
    assert match_detections([boxes[:1], scores[:1], labels[:1]], [boxes[[0, 1]], scores[[0, 1]], labels[[0, 1]]], 0.001, 2) == []


def test_ema_update_is_the_ramped_moving_average():
    from cvtrain.families.cvdet.detector import ModelEMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, tau=2.0, decay=0.9)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].num_batches_tracked += 3
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2.0))
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, d * start[k] + (1 - d) * model.state_dict()[k]), k
        else:
            assert torch.equal(v, model.state_dict()[k]), k  # counters are copied, not averaged
    assert ema.updates == 1 and not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.parametrize("change", [None, "flip", "score", "box"])
def test_export_verification_of_outputs_before_nms(monkeypatch, tmp_path, change):
    """The runtime's raw outputs as torch's (accepted), with two near-tied overlapping boxes
    swapped by rounding (NMS keeps the other one: accepted, said so), or really different."""
    from cvtrain import export, settings

    boxes = np.array([[[0, 0, 10, 10], [0.2, 0, 10, 10], [30, 30, 40, 40]]], np.float32)
    scores = np.array([[[0.8, 0.0], [0.8 - 2e-7, 0.0], [0.0, 0.6]]], np.float32)

    class Graph(torch.nn.Module):
        def forward(self, images):
            return torch.from_numpy(boxes), torch.from_numpy(scores)

    got = [boxes.copy(), scores.copy()]
    if change == "flip":
        got[1][0, 1, 0] = 0.8 + 2e-7  # within rounding: NMS now keeps box 1 instead of box 0
    elif change == "score":
        got[1][0, 2, 1] = 0.5
    elif change == "box":
        got[0][0, 2] += 2.0
    monkeypatch.setattr(export, "run_onnx", lambda path, feeds, outputs: (got, "fake-runtime 1.0", []))
    monkeypatch.setattr(export, "_onnx_export", lambda *a, **k: b"")
    monkeypatch.setattr(export, "_normalise_graph", lambda data: (data, None))
    info = export.export_dense_detector(Graph(), torch.zeros(1, 3, 8, 8), str(tmp_path / "m.onnx"), postprocess_numpy, settings.CVDET_SCORE_THRESH, settings.DETECTIONS_PER_IMAGE)
    assert info["verified"] is (change in (None, "flip")), info
    if change == "flip":
        assert "tied within rounding" in info["note"]
    elif change is None:
        assert info["note"].endswith("the 2 detections after NMS match")
