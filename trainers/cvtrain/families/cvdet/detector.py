"""cvdet behind torchvision's detection interface, its post-processing, EMA and export graph."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ... import settings
from .loss import detection_loss
from .model import REG_MAX, CvdetNet, anchor_points


class CvDetector(nn.Module):
    """train: `model(images, targets) -> {loss, box, cls, dfl}`; eval: `model(images) ->
    [{boxes x1 y1 x2 y2 (input pixels), scores, labels (1-based)}]`, like torchvision's
    detectors, so DetectionTrainer and the benchmark's plain loop drive it unchanged.
    `images` is a 0..1 NCHW tensor or a list of CHW tensors of one size."""

    def __init__(self, size: str, num_classes: int):
        super().__init__()
        self.net = CvdetNet(size, num_classes)

    def forward(self, images: Any, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        x = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        h, w = int(x.shape[-2]), int(x.shape[-1])
        box_logits, cls_logits = self.net(x)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            points, strides = anchor_points(self.net.feature_sizes(h, w), x.device)
            with torch.autocast(device_type=x.device.type, enabled=False):
                return detection_loss(box_logits, cls_logits, points, strides, targets)
        boxes, scores = self.net.decode(box_logits, cls_logits, h, w)
        return postprocess(boxes, scores)


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    conf: float = settings.CVDET_SCORE_THRESH,
    iou: float = settings.CVDET_NMS_IOU,
    max_det: int = settings.DETECTIONS_PER_IMAGE,
    pre_nms: int = settings.CVDET_PRE_NMS_TOPK,
) -> list[dict[str, torch.Tensor]]:
    """Per-class NMS over (cell, class) candidates: [B, A, 4] boxes, [B, A, C] probabilities."""
    from torchvision.ops import batched_nms

    out = []
    c = scores.shape[-1]
    for bx, sc in zip(boxes, scores):
        flat = sc.reshape(-1)
        values, idx = flat.topk(min(pre_nms, flat.numel()))
        keep = values > conf
        values, idx = values[keep], idx[keep]
        cells, labels = idx // c, idx % c
        cand = bx[cells]
        kept = batched_nms(cand, values, labels, iou)[:max_det]
        out.append({"boxes": cand[kept], "scores": values[kept], "labels": labels[kept] + 1})
    return out


def postprocess_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    conf: float = settings.CVDET_SCORE_THRESH,
    iou: float = settings.CVDET_NMS_IOU,
    max_det: int = settings.DETECTIONS_PER_IMAGE,
    pre_nms: int = settings.CVDET_PRE_NMS_TOPK,
    return_cells: bool = False,
) -> tuple[np.ndarray, ...]:
    """What a consumer of the ONNX file runs after it: one image's boxes [A, 4] and
    probabilities [A, C] -> (boxes [N, 4], scores [N], class indices [N]), the same selection
    as `postprocess` (a test checks they agree); with `return_cells`, also the cell index [N]
    of each detection."""
    c = scores.shape[-1]
    flat = scores.reshape(-1)
    idx = np.argsort(-flat, kind="stable")[: min(pre_nms, flat.size)]
    idx = idx[flat[idx] > conf]
    values = flat[idx]
    cells, labels = idx // c, idx % c
    cand = boxes[cells].astype(np.float64)
    if not len(cand):
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return (*empty, np.zeros(0, np.int64)) if return_cells else empty
    # Per-class NMS in one pass: boxes of different classes are moved apart so they never overlap.
    offset = labels[:, None] * (cand.max() + 1.0)
    b = cand + offset
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_det:
            break
        xx1 = np.maximum(b[i, 0], b[i + 1 :, 0])
        yy1 = np.maximum(b[i, 1], b[i + 1 :, 1])
        xx2 = np.minimum(b[i, 2], b[i + 1 :, 2])
        yy2 = np.minimum(b[i, 3], b[i + 1 :, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ious = inter / (area[i] + area[i + 1 :] - inter)
        suppressed[i + 1 :] |= ious > iou
    k = np.asarray(keep, dtype=np.int64)
    out = (cand[k].astype(np.float32), values[k].astype(np.float32), labels[k].astype(np.int64))
    return (*out, cells[k].astype(np.int64)) if return_cells else out


class ExportGraph(nn.Module):
    """0..1 NCHW image (batch 1, fixed side) -> boxes [1, A, 4] x1 y1 x2 y2 in input pixels and
    class probabilities [1, A, C], before NMS.

    The same arithmetic as CvdetNet.decode, laid out for ONNX runtimes with a narrow operator
    set (OpenCV's dnn: no ReduceSum at opset 13, no slicing-and-broadcasting of rank-3 tensors):
    the box-side expectation is a fixed 1x1 convolution over the softmaxed bins, and the box
    corners are cell centre + sign * distance, times the stride, with centres, signs and strides
    as full-shape constants of the graph (the side is fixed)."""

    def __init__(self, model: CvDetector, image_size: int):
        super().__init__()
        self.net = model.net
        points, strides = anchor_points(CvdetNet.feature_sizes(image_size, image_size))
        a = self.cells = int(points.shape[0])
        centres = torch.cat([points, points], 1).t().reshape(1, 4, 1, a)  # x y x y per cell
        self.register_buffer("centres", centres.contiguous())
        self.register_buffer("strides", strides.t().reshape(1, 1, 1, a).expand(1, 4, 1, a).contiguous())
        self.register_buffer("signs", torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(1, 4, 1, 1).expand(1, 4, 1, a).contiguous())
        self.expectation = nn.Conv2d(REG_MAX, 1, 1, bias=False)
        with torch.no_grad():
            self.expectation.weight.copy_(torch.arange(REG_MAX, dtype=torch.float32).view(1, REG_MAX, 1, 1))
        self.expectation.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        box_logits, cls_logits = net.head.channels_first(net.neck(net.backbone(images)))
        a = self.cells
        probs = box_logits.reshape(1, 4, REG_MAX, a).transpose(1, 2).softmax(1)  # [1, bins, 4, A]
        ltrb = self.expectation(probs).reshape(1, 4, 1, a)
        boxes = (self.centres + ltrb * self.signs) * self.strides
        return boxes.reshape(1, 4, a).transpose(1, 2), cls_logits.sigmoid().transpose(1, 2)


class ModelEMA:
    """Exponential moving average of a model's parameters and buffers (Polyak averaging as the
    YOLO trainers do it): evaluated and exported instead of the raw weights, which jitter from
    step to step."""

    def __init__(self, model: nn.Module, tau: float, decay: float = settings.CVDET_EMA_DECAY):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.tau = float(tau)
        self.decay = decay
        self.updates = 0
        self._pairs: tuple | None = None

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        if self._pairs is None or self._pairs[0] is not model:
            # The tensors themselves persist (load_state_dict copies into them), so they are
            # listed once: one fused multiply-add over all of them instead of ~1000 small ops a
            # step, which on a GPU cost as much as a large part of cvdet_n's step.
            src, own = model.state_dict(), self.module.state_dict()
            floats = [k for k, v in own.items() if v.dtype.is_floating_point]
            others = [k for k, v in own.items() if not v.dtype.is_floating_point]
            self._pairs = (model, [own[k] for k in floats], [src[k] for k in floats], [own[k] for k in others], [src[k] for k in others])
        _, ema_f, src_f, ema_o, src_o = self._pairs
        torch._foreach_mul_(ema_f, d)
        torch._foreach_add_(ema_f, src_f, alpha=1 - d)
        for e, s in zip(ema_o, src_o):
            e.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
