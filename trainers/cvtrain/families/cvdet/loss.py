"""Training targets and losses of cvdet: task-aligned assignment, CIoU and distribution focal loss.

Task-aligned assigner (TOOD, Feng et al. 2021, as YOLOv8 uses it): for every ground-truth box,
among the cells whose centre lies inside it, the `TOPK` with the highest alignment
    t = s^ALPHA * u^BETA
(s: the cell's predicted probability of the box's class, u: IoU of the cell's predicted box
with it) become positives. A cell claimed by several boxes keeps the one it overlaps most.
The class target of a positive is not 1 but t rescaled so that each box's best-aligned cell
gets that cell's IoU: classification learns to predict localisation quality.

Losses, each divided by the sum of the class targets (so the scale does not depend on how
many objects a batch holds):
  * classification: binary cross-entropy against those soft targets, over every cell and class;
  * box: 1 - CIoU (Zheng et al. 2020: IoU minus a centre-distance and an aspect-ratio term),
    weighted by the positive's target;
  * DFL (generalised focal loss, Li et al. 2020): each side's distance d (in strides) is a
    distribution over integer bins; cross-entropy against the two bins around d, weighted by
    their closeness, so the distribution concentrates where d is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import REG_MAX, dfl_expectation, distances_to_boxes

TOPK = 10
ALPHA = 0.5
BETA = 6.0
# Loss weights (YOLOv8's defaults, tuned with these normalisations).
BOX_GAIN = 7.5
CLS_GAIN = 0.5
DFL_GAIN = 1.5
EPS = 1e-9


def box_iou_pairwise(a: torch.Tensor, b: torch.Tensor, ciou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or CIoU) of boxes x1 y1 x2 y2 broadcast against each other over the last dim."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    aw, ah = ax2 - ax1, (ay2 - ay1).clamp(min=eps)
    bw, bh = bx2 - bx1, (by2 - by1).clamp(min=eps)
    inter = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0) * (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = torch.max(ax2, bx2) - torch.min(ax1, bx1)
    ch = torch.max(ay2, by2) - torch.min(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(bw / bh) - torch.atan(aw / ah)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def assign(
    scores: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    topk: int = TOPK,
    alpha: float = ALPHA,
    beta: float = BETA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment.

    scores [B, A, C] probabilities, pred_boxes [B, A, 4] and points [A, 2] in the same units as
    gt_boxes [B, M, 4]; gt_labels [B, M] class indices; gt_mask [B, M] real (not padding) boxes.
    Returns (target boxes [B, A, 4], target scores [B, A, C], foreground [B, A] bool,
    assigned ground-truth index [B, A]).
    """
    b, a, c = scores.shape
    m = gt_boxes.shape[1]
    device = scores.device
    if m == 0:
        return (
            torch.zeros(b, a, 4, device=device),
            torch.zeros(b, a, c, device=device),
            torch.zeros(b, a, dtype=torch.bool, device=device),
            torch.zeros(b, a, dtype=torch.long, device=device),
        )
    # Cell centres strictly inside each box: [B, M, A].
    lt = points[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - points[None, None]
    inside = torch.cat([lt, rb], -1).amin(-1) > EPS
    valid = inside & gt_mask[:, :, None]
    overlaps = box_iou_pairwise(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]).clamp(min=0) * valid
    cls_score = scores.transpose(1, 2).gather(1, gt_labels[:, :, None].expand(-1, -1, a).clamp(0, c - 1))
    align = cls_score.pow(alpha) * overlaps.pow(beta) * valid
    k = min(topk, a)
    top_idx = align.topk(k, dim=-1).indices
    in_topk = torch.zeros_like(valid).scatter_(-1, top_idx, True)
    pos = in_topk & valid
    # A cell claimed by several boxes keeps the one it overlaps most.
    claims = pos.sum(1)
    if bool((claims > 1).any()):
        best = F.one_hot(overlaps.argmax(1), m).transpose(1, 2).bool()
        pos = torch.where((claims > 1)[:, None, :], best, pos)
    fg = pos.any(1)
    gt_idx = pos.float().argmax(1)
    target_labels = gt_labels.gather(1, gt_idx)
    target_boxes = gt_boxes.gather(1, gt_idx[..., None].expand(-1, -1, 4))
    target_scores = F.one_hot(target_labels.clamp(0, c - 1), c).float() * fg[..., None]
    align = align * pos
    overlaps = overlaps * pos
    norm = (align * overlaps.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + EPS)).amax(1)
    return target_boxes, target_scores * norm[..., None], fg, gt_idx


def dfl_loss(box_logits: torch.Tensor, target_ltrb: torch.Tensor) -> torch.Tensor:
    """box_logits [N, 4*REG_MAX], target distances [N, 4] in strides -> per-box loss [N]."""
    t = target_ltrb.clamp(0, REG_MAX - 1 - 0.01)
    left = t.floor().long()
    w_left = left + 1 - t
    logits = box_logits.reshape(-1, REG_MAX)
    ce_left = F.cross_entropy(logits, left.reshape(-1), reduction="none").view(left.shape)
    ce_right = F.cross_entropy(logits, (left + 1).reshape(-1), reduction="none").view(left.shape)
    return (ce_left * w_left + ce_right * (1 - w_left)).mean(-1)


def pad_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image {boxes, labels (1-based)} -> labels [B, M] 0-based, boxes [B, M, 4], mask [B, M]."""
    m = max((len(t["labels"]) for t in targets), default=0)
    b = len(targets)
    labels = torch.zeros(b, m, dtype=torch.long, device=device)
    boxes = torch.zeros(b, m, 4, device=device)
    mask = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            labels[i, :n] = t["labels"].to(device) - 1
            boxes[i, :n] = t["boxes"].to(device).float()
            mask[i, :n] = True
    return labels, boxes, mask


def detection_loss(
    box_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Head outputs [B, A, 4*REG_MAX], [B, A, C]; cell centres (grid units) and strides [A, 1];
    targets in input pixels. Returns {loss, box, cls, dfl} (float32)."""
    box_logits = box_logits.float()
    cls_logits = cls_logits.float()
    gt_labels, gt_boxes, gt_mask = pad_targets(targets, box_logits.device)
    # Predicted boxes in grid units of their own level (what the box losses compare).
    pred = distances_to_boxes(points, dfl_expectation(box_logits))
    target_boxes, target_scores, fg, _ = assign(
        cls_logits.detach().sigmoid(), pred.detach() * strides, points * strides, gt_labels, gt_boxes, gt_mask
    )
    score_sum = target_scores.sum().clamp(min=1.0)
    cls = F.binary_cross_entropy_with_logits(cls_logits, target_scores, reduction="sum") / score_sum
    if bool(fg.any()):
        weight = target_scores.sum(-1)[fg]
        tb = target_boxes / strides  # to grid units of each cell's level
        ciou = box_iou_pairwise(pred[fg], tb[fg], ciou=True)
        box = ((1.0 - ciou) * weight).sum() / score_sum
        ltrb = torch.cat([points[None].expand_as(pred[..., :2]) - tb[..., :2], tb[..., 2:] - points[None].expand_as(pred[..., :2])], -1)
        dfl = (dfl_loss(box_logits[fg], ltrb[fg]) * weight).sum() / score_sum
    else:
        box = dfl = box_logits.sum() * 0.0
    loss = BOX_GAIN * box + CLS_GAIN * cls + DFL_GAIN * dfl
    return {"loss": loss, "box": box.detach(), "cls": cls.detach(), "dfl": dfl.detach()}
