"""Object detection with models that follow torchvision's detection interface:
train mode `model(images, targets) -> {loss name: tensor}` (summed, or, when a "loss"
key is present, that is the total and the rest are logged components), eval mode
`model(images) -> [{boxes (x1 y1 x2 y2), scores, labels (1-based)}]`.
Other families (ultralytics, transformers) adapt their models to this interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import compat, export
from ..datasets.loading import DetectionDataset, unpack_targets
from ..errors import ConfigError
from ..families import torchvision_models as tvm
from ..metrics import CocoEvaluator
from ..trainer import BaseTrainer

# Flat metric names of the `epoch` event -> COCOeval statistic. mAP is AP@[.5:.95].
METRIC_NAMES = {
    "mAP": "AP",
    "mAP50": "AP50",
    "mAP75": "AP75",
    "APs": "APs",
    "APm": "APm",
    "APl": "APl",
    "AR1": "AR1",
    "AR10": "AR10",
    "AR100": "AR100",
    "ARs": "ARs",
    "ARm": "ARm",
    "ARl": "ARl",
}


class DetectionTrainer(BaseTrainer):
    task = "object-detection"
    main_metric = "mAP"

    @classmethod
    def default_image_size(cls, architecture: str) -> int:
        return 640

    def make_dataset(self, samples: list[Any], train: bool) -> DetectionDataset:
        return DetectionDataset(samples, self.image_size, train, self.cfg.augment, self.cfg.seed)

    def targets_to_device(self, targets: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        return unpack_targets(targets, self.device)

    def forward_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = self.images_to_device(batch["images"])
        losses = self.model(list(images), self.targets_to_device(batch["targets"]))
        if "loss" in losses:
            return losses["loss"], {k: v for k, v in losses.items() if k != "loss"}
        return sum(losses.values()), losses

    def predict(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections in canvas pixels with 1-based labels."""
        return self.model(list(images))

    def validate(self) -> dict[str, float]:
        evaluator = CocoEvaluator(categories=list(self.class_names))
        for batch in self.val_batches():
            images = self.images_to_device(batch["images"])
            with self.autocast():
                outputs = self.predict(images)
            for out, meta in zip(outputs, batch["meta"]):
                sx, sy = meta["scale"]
                ow, oh = meta["orig_size"]
                boxes = out["boxes"].detach().float().cpu().numpy().astype(np.float64)
                boxes[:, [0, 2]] = (boxes[:, [0, 2]] / sx).clip(0, ow)
                boxes[:, [1, 3]] = (boxes[:, [1, 3]] / sy).clip(0, oh)
                evaluator.add_ground_truth(meta["image_id"], meta["gt_boxes"], meta["gt_labels"], meta["gt_iscrowd"], meta["gt_area"])
                evaluator.add(
                    meta["image_id"],
                    boxes,
                    out["scores"].detach().float().cpu().numpy(),
                    out["labels"].detach().cpu().numpy() - 1,
                )
        stats = evaluator.compute()
        self.val_details = {"per_class_AP": stats["per_class"], "coco_stats": {k: stats[k] for k in METRIC_NAMES.values()}}
        return {name: stats[key] for name, key in METRIC_NAMES.items()}

    def export_example(self) -> torch.Tensor | None:
        """A real validation image (detections on noise are usually empty, which would
        make the output comparison vacuous)."""
        dataset = getattr(self, "val_dataset", None)
        if dataset is None:
            return None
        for i in range(len(dataset)):
            item = dataset[i]
            if isinstance(item, dict):
                return item["image"].unsqueeze(0).float().div(255.0)
        return None

    def export_model(self, fmt: str, path: str) -> dict[str, Any]:
        model = compat.unwrap_model(self.model).float().cpu().eval()
        return export.export_detector(model, self.image_size, path, self.export_example())


class TorchvisionDetectionTrainer(DetectionTrainer):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.architecture not in tvm.DETECTION_ARCHITECTURES:
            raise ConfigError(
                "architecture",
                f"{cfg.architecture!r} is not a torchvision detection builder cvtrain supports; "
                f"choose one of {', '.join(tvm.DETECTION_ARCHITECTURES)}",
            )

    @classmethod
    def default_image_size(cls, architecture: str) -> int:
        return tvm.DETECTION_ARCHITECTURES.get(architecture, 640)

    def create_model(self) -> torch.nn.Module:
        return tvm.build_detector(self.cfg.architecture, len(self.class_names) + 1, self.image_size)
