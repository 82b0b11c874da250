"""RT-DETR from Hugging Face transformers, trained inside cvtrain's loop.

The model is built from a config (random init, ResNet-vd backbone implemented in
transformers itself, no timm, nothing downloaded) and wrapped to speak torchvision's
detection interface, so checkpoints, resume, SIGTERM, COCO evaluation and events are the
same as for every other detector. Exercised on the GPU machine, where transformers is
installed; here it only has to fail clearly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import settings
from ..errors import ConfigError, FrameworkUnavailable
from ..tasks.detection import DetectionTrainer

# architecture -> (backbone layer type, depths, hidden sizes, decoder layers, hidden expansion)
# following the published rtdetr_r18vd / r34vd / r50vd configurations.
PRESETS: dict[str, tuple[str, list[int], list[int], int, float]] = {
    "rtdetr_r18vd": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], 3, 0.5),
    "rtdetr_r34vd": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], 4, 0.5),
    "rtdetr_r50vd": ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048], 6, 1.0),
}


def build_rtdetr(architecture: str, class_names: list[str]) -> nn.Module:
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig

    layer_type, depths, hidden, decoder_layers, expansion = PRESETS[architecture]
    backbone = RTDetrResNetConfig(
        num_channels=3,
        embedding_size=64,
        hidden_sizes=hidden,
        depths=depths,
        layer_type=layer_type,
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        out_indices=[2, 3, 4],
    )
    config = RTDetrConfig(
        backbone_config=backbone,
        encoder_in_channels=hidden[1:],
        decoder_layers=decoder_layers,
        hidden_expansion=expansion,
        num_labels=len(class_names),
        id2label={i: n for i, n in enumerate(class_names)},
        label2id={n: i for i, n in enumerate(class_names)},
    )
    return RTDetrForObjectDetection(config)


def _xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)


class RTDetrAdapter(nn.Module):
    """torchvision detection interface over RTDetrForObjectDetection.

    Train: returns {"loss": weighted total, components...}; eval: top-scoring queries as
    torchvision-style detections (RT-DETR needs no NMS)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        x = torch.stack(list(images))
        h, w = x.shape[-2:]
        scale = x.new_tensor([w, h, w, h])
        if self.training:
            labels = [
                {"class_labels": t["labels"] - 1, "boxes": _xyxy_to_cxcywh(t["boxes"]) / scale} for t in targets or []
            ]
            out = self.model(pixel_values=x, labels=labels)
            parts = {k: v for k, v in (out.loss_dict or {}).items() if k in ("loss_vfl", "loss_bbox", "loss_giou")}
            return {"loss": out.loss, **parts}
        out = self.model(pixel_values=x)
        prob = out.logits.float().sigmoid()
        b, q, k = prob.shape
        top = min(settings.DETECTIONS_PER_IMAGE, q * k)
        scores, idx = prob.flatten(1).topk(top, dim=1)
        labels = idx % k
        query = idx // k
        boxes = out.pred_boxes.float().gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        cx, cy, bw, bh = boxes.unbind(-1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1) * scale
        return [{"boxes": xyxy[i], "scores": scores[i], "labels": labels[i] + 1} for i in range(b)]


class RTDetrTrainer(DetectionTrainer):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.task != "object-detection":
            raise ConfigError("task", "the transformers family trains RT-DETR detectors only")
        if cfg.architecture not in PRESETS:
            raise ConfigError("architecture", f"{cfg.architecture!r} is not one of {', '.join(PRESETS)}")
        try:
            from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig  # noqa: F401
        except ImportError as exc:
            import transformers

            raise FrameworkUnavailable(
                f"transformers {transformers.__version__} is installed but has no RT-DETR ({exc}); it needs transformers >= 4.44"
            ) from None

    @classmethod
    def default_image_size(cls, architecture: str) -> int:
        return 640

    def create_model(self) -> nn.Module:
        return RTDetrAdapter(build_rtdetr(self.cfg.architecture, list(self.class_names)))
