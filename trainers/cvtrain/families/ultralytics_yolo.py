"""Ultralytics YOLO (v8-v11) detection models, trained inside cvtrain's loop.

The network is built from the model yaml that ships inside the ultralytics package
(random init, nothing downloaded) and its own loss; cvtrain keeps the loop, so
checkpoints, resume, SIGTERM, COCO evaluation and events match the other families.
Neither this machine nor the GPU machine has ultralytics installed, so this adapter has
not been run; without the package the family fails at config time with exit code 4.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from .. import settings
from ..errors import ConfigError, FrameworkUnavailable
from ..tasks.detection import DetectionTrainer

ARCHITECTURE = re.compile(r"^yolo(v8|v9|v10|11|12)[nsmlxtce]?$")
# NMS settings of ultralytics' own validator (mAP needs low-confidence boxes).
NMS_CONF = 0.001
NMS_IOU = 0.7


def _nms() -> Any:
    try:  # moved in ultralytics 8.3.1xx
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression
    return non_max_suppression


class YoloAdapter(nn.Module):
    def __init__(self, architecture: str, num_classes: int):
        super().__init__()
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel

        self.model = DetectionModel(cfg=f"{architecture}.yaml", nc=num_classes, verbose=False)
        # The loss reads its box/cls/dfl gains from model.args.
        self.model.args = get_cfg()

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        x = torch.stack(list(images))
        h, w = x.shape[-2:]
        if self.training:
            scale = x.new_tensor([w, h, w, h])
            idx, cls, boxes = [], [], []
            for i, t in enumerate(targets or []):
                b = t["boxes"] / scale
                idx.append(torch.full((len(b),), i, device=x.device, dtype=torch.float32))
                cls.append((t["labels"] - 1).float().unsqueeze(1))
                boxes.append(torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1))
            batch = {"img": x, "batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}
            loss, items = self.model.loss(batch)
            # ultralytics scales its loss by the batch size (for its nominal-batch LR rule);
            # cvtrain's learning rates are per-image means like torchvision's.
            total = loss.sum() / x.shape[0]
            names = ("box", "cls", "dfl")
            return {"loss": total, **{n: items[i] for i, n in enumerate(names) if i < len(items)}}
        preds = self.model(x)
        preds = preds[0] if isinstance(preds, (tuple, list)) else preds
        dets = _nms()(preds, conf_thres=NMS_CONF, iou_thres=NMS_IOU, max_det=settings.DETECTIONS_PER_IMAGE)
        return [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long() + 1} for d in dets]


class YoloTrainer(DetectionTrainer):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.task != "object-detection":
            raise ConfigError("task", "the ultralytics family trains YOLO detectors only")
        if not ARCHITECTURE.match(cfg.architecture):
            raise ConfigError("architecture", f"{cfg.architecture!r} is not a YOLO model name such as yolov8n or yolo11s")
        try:
            from ultralytics.nn.tasks import DetectionModel  # noqa: F401

            _nms()
        except ImportError as exc:
            raise FrameworkUnavailable(f"the installed ultralytics package lacks what cvtrain uses ({exc})") from None

    def create_model(self) -> nn.Module:
        return YoloAdapter(self.cfg.architecture, len(self.class_names))
