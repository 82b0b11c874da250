"""torchvision model builders, always with weights=None: nothing is ever downloaded.

Pretrained starting points come from `pretrained_weights` (a local file) instead.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .. import settings

# architecture -> native input side (the default `image_size`)
DETECTION_ARCHITECTURES: dict[str, int] = {
    "ssdlite320_mobilenet_v3_large": 320,
    "fasterrcnn_mobilenet_v3_large_320_fpn": 320,
    "fasterrcnn_mobilenet_v3_large_fpn": 640,
    "fasterrcnn_resnet50_fpn": 640,
    "fcos_resnet50_fpn": 640,
    "retinanet_resnet50_fpn": 640,
    "ssd300_vgg16": 300,
}
CLASSIFICATION_ARCHITECTURES: dict[str, int] = {
    "resnet18": 224,
    "resnet34": 224,
    "resnet50": 224,
    "mobilenet_v3_small": 224,
    "mobilenet_v3_large": 224,
    "efficientnet_b0": 224,
}
# Mean/std of the ImageNet statistics the classifier stems expect (as in torchvision).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _builder(name: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm
    import torchvision.models.detection as tvd

    module = tvd if name in DETECTION_ARCHITECTURES else tvm
    return getattr(module, name)


def set_detector_input_size(model: nn.Module, side: int) -> None:
    """Make a torchvision detector take side x side inputs.

    Our loaders already letterbox to side x side, so the detector's own resize becomes a
    no-op instead of upscaling to its COCO default (800-1333 px). SSD models have a
    fixed input size; their anchor generators adapt to the feature map sizes, so setting
    it is supported.
    """
    transform = model.transform
    transform.min_size = (side,)
    transform.max_size = side
    if getattr(transform, "fixed_size", None) is not None:
        transform.fixed_size = (side, side)


def build_detector(architecture: str, num_classes: int, image_size: int) -> nn.Module:
    """`num_classes` counts the background class (label 0) as torchvision expects."""
    builder = _builder(architecture)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if architecture.startswith(("fcos", "retinanet")):
        # Low-score detections matter for COCO mAP; fcos' default 0.2 hides them.
        kwargs["score_thresh"] = settings.DETECTION_SCORE_THRESH
        kwargs["detections_per_img"] = settings.DETECTIONS_PER_IMAGE
    elif architecture.startswith("fasterrcnn"):
        kwargs["box_score_thresh"] = settings.DETECTION_SCORE_THRESH
        kwargs["box_detections_per_img"] = settings.DETECTIONS_PER_IMAGE
    model = builder(**kwargs)
    if architecture.startswith("ssd"):
        # ssdlite's builder forwards extra kwargs into its backbone too, so set these after.
        model.score_thresh = settings.DETECTION_SCORE_THRESH
        model.detections_per_img = settings.DETECTIONS_PER_IMAGE
    set_detector_input_size(model, image_size)
    return model


def build_classifier(architecture: str, num_classes: int) -> nn.Module:
    return _builder(architecture)(weights=None, num_classes=num_classes)


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Copy tensors whose name and shape match; returns (loaded count, skipped names)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = sorted(k for k in state if k not in usable)
    model.load_state_dict(usable, strict=False)
    return len(usable), skipped
