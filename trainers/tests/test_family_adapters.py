"""The RT-DETR and YOLO adapters' tensor plumbing, against stand-ins with the interfaces of
transformers' RTDetrForObjectDetection and ultralytics' DetectionModel (neither package is
installed here; the GPU machine runs the real RT-DETR through the benchmark script)."""

from types import SimpleNamespace

import torch
from torch import nn

from cvtrain.families.transformers_rtdetr import RTDetrAdapter
from cvtrain.families.ultralytics_yolo import YoloAdapter


class FakeRTDetr(nn.Module):
    def __init__(self, logits, boxes):
        super().__init__()
        self.logits, self.boxes, self.seen = logits, boxes, None

    def forward(self, pixel_values, labels=None):
        self.seen = labels
        if labels is not None:
            loss = torch.tensor(2.5)
            return SimpleNamespace(loss=loss, loss_dict={"loss_vfl": torch.tensor(1.0), "loss_bbox": torch.tensor(0.5), "loss_giou": torch.tensor(1.0), "loss_vfl_aux_0": torch.tensor(9.0)})
        return SimpleNamespace(logits=self.logits, pred_boxes=self.boxes)


def test_rtdetr_adapter_training_targets_are_normalised_cxcywh():
    fake = FakeRTDetr(None, None)
    adapter = RTDetrAdapter(fake).train()
    images = [torch.zeros(3, 100, 200)]
    targets = [{"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([3])}]
    out = adapter(images, targets)
    assert out["loss"].item() == 2.5 and set(out) == {"loss", "loss_vfl", "loss_bbox", "loss_giou"}
    (label,) = fake.seen
    assert label["class_labels"].tolist() == [2]  # 1-based -> 0-based
    assert torch.allclose(label["boxes"], torch.tensor([[40 / 200, 30 / 100, 40 / 200, 40 / 100]]))


def test_rtdetr_adapter_outputs_top_queries_in_pixels():
    # 1 image, 3 queries, 2 classes; query 1 / class 1 is the most confident.
    logits = torch.tensor([[[-5.0, -5.0], [-4.0, 3.0], [1.0, -5.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    adapter = RTDetrAdapter(FakeRTDetr(logits, boxes)).eval()
    (det,) = adapter([torch.zeros(3, 100, 200)])
    assert det["labels"][0].item() == 2 and torch.isclose(det["scores"][0], torch.sigmoid(torch.tensor(3.0)))
    assert torch.allclose(det["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert det["labels"][1].item() == 1 and torch.allclose(det["boxes"][1], torch.tensor([0.0, 0.0, 200.0, 100.0]))
    assert (det["scores"][:-1] >= det["scores"][1:]).all() and len(det["scores"]) == 6


def test_yolo_adapter_builds_ultralytics_batches():
    seen = {}

    class FakeYolo(nn.Module):
        def loss(self, batch):
            seen.update(batch)
            return torch.tensor([4.0, 2.0, 2.0]) * batch["img"].shape[0], torch.tensor([1.0, 0.5, 0.5])

    adapter = YoloAdapter.__new__(YoloAdapter)
    nn.Module.__init__(adapter)
    adapter.model = FakeYolo()
    adapter.train()
    images = [torch.zeros(3, 64, 64), torch.zeros(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 32.0, 16.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[32.0, 32.0, 64.0, 64.0], [0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([2, 3])},
    ]
    out = adapter(images, targets)
    # ultralytics multiplies its loss by the batch size; the adapter reports the per-image mean.
    assert out["loss"].item() == 8.0 and set(out) == {"loss", "box", "cls", "dfl"}
    assert seen["batch_idx"].tolist() == [0, 1, 1]
    assert seen["cls"].squeeze(1).tolist() == [0, 1, 2]
    assert torch.allclose(seen["bboxes"][0], torch.tensor([0.25, 0.125, 0.5, 0.25]))
