"""The cvdet network: CSP backbone (C2f blocks), PAN/FPN neck, decoupled anchor-free head.

Written for this package from the published descriptions of the single-stage anchor-free YOLO
designs (YOLOv8's C2f block, SPPF, PAN neck, decoupled head with a distribution of box-side
distances): one prediction per feature-map cell at strides 8, 16 and 32, each a class score per
class and, per box side (left, top, right, bottom), a distribution over `REG_MAX` integer
distances in units of the level's stride.

Sizes scale the channel widths and block repeats (`SIZES`); the names are this package's own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# name -> (depth multiple, width multiple, largest channel count)
SIZES: dict[str, tuple[float, float, int]] = {
    "cvdet_n": (0.33, 0.25, 1024),
    "cvdet_s": (0.33, 0.50, 1024),
    "cvdet_m": (0.67, 0.75, 768),
}
# Channels of the five backbone stages and block repeats at multiples 1.0.
BASE_CHANNELS = (64, 128, 256, 512, 1024)
BASE_REPEATS = (3, 6, 6, 3)
STRIDES = (8, 16, 32)
# Bins of each box-side distribution: distances 0..REG_MAX-1 strides (15 strides at stride 32
# is 480 px from the cell centre, enough for the largest objects at 640 px).
REG_MAX = 16
# Prior probability of an object in the class head's bias (focal-loss paper): with a neutral
# 0.5 the ~thousands of background cells swamp the first steps' loss.
CLASS_PRIOR = 0.01
BN_EPS = 1e-3
# PyTorch's default rather than YOLO's 0.03: the running statistics start at mean 0, variance 1
# and keep 0.97^n of that after n steps, which still dominates the (much smaller) real variances
# after the ~100 steps of a short CPU run, so evaluation saw garbage (mAP50 0.0 with running
# statistics, 0.74 with batch statistics, at step 75 of the quickstart run). 0.9^75 is 4e-4.
BN_MOMENTUM = 0.1


def _width(c: int, w: float, max_c: int) -> int:
    return max(8, int(math.ceil(min(c, max_c) * w / 8) * 8))


def _depth(n: int, d: float) -> int:
    return max(1, round(n * d))


class Conv(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block: a 1x1 conv splits the channels in two halves; one half runs through `n`
    bottlenecks, and every intermediate output is concatenated with both halves before a final
    1x1 conv (more gradient paths at little cost)."""

    def __init__(self, c1: int, c2: int, n: int, shortcut: bool):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        # Slicing, not torch.split/chunk: exports as Slice, which every ONNX runtime here runs.
        ys = [y[:, : self.c], y[:, self.c :]]
        for m in self.m:
            ys.append(m(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        c = c1 // 2
        self.cv1 = Conv(c1, c, 1)
        self.cv2 = Conv(4 * c, c2, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class Backbone(nn.Module):
    def __init__(self, ch: list[int], reps: list[int]):
        super().__init__()
        c1, c2, c3, c4, c5 = ch
        self.stem = Conv(3, c1, 3, 2)
        self.stage2 = nn.Sequential(Conv(c1, c2, 3, 2), C2f(c2, c2, reps[0], True))
        self.stage3 = nn.Sequential(Conv(c2, c3, 3, 2), C2f(c3, c3, reps[1], True))
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2), C2f(c4, c4, reps[2], True))
        self.stage5 = nn.Sequential(Conv(c4, c5, 3, 2), C2f(c5, c5, reps[3], True), SPPF(c5, c5))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        return [p3, p4, self.stage5(p4)]


class Neck(nn.Module):
    """PAN: top-down (FPN) fusion, then bottom-up fusion back to the three strides."""

    def __init__(self, ch: list[int], n: int):
        super().__init__()
        _, _, c3, c4, c5 = ch
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = C2f(c5 + c4, c4, n, False)
        self.td3 = C2f(c4 + c3, c3, n, False)
        self.down3 = Conv(c3, c3, 3, 2)
        self.bu4 = C2f(c3 + c4, c4, n, False)
        self.down4 = Conv(c4, c4, 3, 2)
        self.bu5 = C2f(c4 + c5, c5, n, False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return [n3, n4, n5]


class Head(nn.Module):
    """Decoupled head: separate box and class branches per level (two 3x3 convs each)."""

    def __init__(self, num_classes: int, ch: tuple[int, ...]):
        super().__init__()
        self.nc = num_classes
        cb = max(16, ch[0] // 4, 4 * REG_MAX)
        cc = max(ch[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(c, cb, 3), Conv(cb, cb, 3), nn.Conv2d(cb, 4 * REG_MAX, 1)) for c in ch)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, cc, 3), Conv(cc, cc, 3), nn.Conv2d(cc, num_classes, 1)) for c in ch)
        self.init_biases()

    def init_biases(self) -> None:
        prior = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)
        for branch in self.cls:
            nn.init.constant_(branch[-1].bias, prior)
        for branch in self.box:
            # Equal logits: every box side starts as the mean of the bins.
            nn.init.constant_(branch[-1].bias, 1.0)

    def channels_first(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(box logits [B, 4*REG_MAX, A], class logits [B, C, A]) over all levels' cells,
        row-major per level, levels in stride order."""
        boxes = [box(f).flatten(2) for f, box in zip(feats, self.box)]
        classes = [cls(f).flatten(2) for f, cls in zip(feats, self.cls)]
        return torch.cat(boxes, 2), torch.cat(classes, 2)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(box logits [B, A, 4*REG_MAX], class logits [B, A, C])."""
        boxes, classes = self.channels_first(feats)
        return boxes.transpose(1, 2), classes.transpose(1, 2)


def anchor_points(sizes: list[tuple[int, int]], device: Any = None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres in grid units ([A, 2], x y) and each cell's stride ([A, 1])."""
    points, strides = [], []
    for (h, w), s in zip(sizes, STRIDES):
        ys = torch.arange(h, device=device, dtype=dtype) + 0.5
        xs = torch.arange(w, device=device, dtype=dtype) + 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([gx, gy], -1).reshape(-1, 2))
        strides.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strides)


def dfl_expectation(box_logits: torch.Tensor) -> torch.Tensor:
    """[..., 4*REG_MAX] logits -> [..., 4] expected distances (ltrb, in strides)."""
    shape = box_logits.shape[:-1]
    probs = box_logits.reshape(*shape, 4, REG_MAX).softmax(-1)
    bins = torch.arange(REG_MAX, device=box_logits.device, dtype=probs.dtype)
    return (probs * bins).sum(-1)


def distances_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Cell centres and ltrb distances (same units) -> x1 y1 x2 y2."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


class CvdetNet(nn.Module):
    """images (0..1, NCHW) -> raw head outputs; `decode` turns them into boxes and scores."""

    def __init__(self, size: str, num_classes: int):
        super().__init__()
        d, w, max_c = SIZES[size]
        ch = [_width(c, w, max_c) for c in BASE_CHANNELS]
        reps = [_depth(n, d) for n in BASE_REPEATS]
        self.size = size
        self.num_classes = num_classes
        self.backbone = Backbone(ch, reps)
        self.neck = Neck(ch, _depth(3, d))
        self.head = Head(num_classes, (ch[2], ch[3], ch[4]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.neck(self.backbone(x)))

    @staticmethod
    def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
        out = []
        for s in STRIDES:
            h, w = height, width
            # Each stride-2 conv (k3, p1) maps n -> ceil(n / 2).
            for _ in range(int(math.log2(s))):
                h, w = (h + 1) // 2, (w + 1) // 2
            out.append((h, w))
        return out

    def decode(self, box_logits: torch.Tensor, cls_logits: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes x1 y1 x2 y2 in input pixels [B, A, 4] and class probabilities [B, A, C]."""
        points, strides = anchor_points(self.feature_sizes(height, width), box_logits.device, torch.float32)
        boxes = distances_to_boxes(points, dfl_expectation(box_logits.float())) * strides
        return boxes, cls_logits.float().sigmoid()
