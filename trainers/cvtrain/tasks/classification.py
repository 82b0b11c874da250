"""Image classification: cross-entropy training, top-1/top-5, confusion matrix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .. import compat, export
from ..datasets.loading import ClassificationDataset
from ..errors import ConfigError
from ..families import torchvision_models as tvm
from ..metrics import ClassificationAccumulator
from ..trainer import BaseTrainer


class ClassificationTrainer(BaseTrainer):
    task = "classification"
    main_metric = "top1"
    mean = tvm.IMAGENET_MEAN
    std = tvm.IMAGENET_STD

    def make_dataset(self, samples: list[Any], train: bool) -> ClassificationDataset:
        return ClassificationDataset(samples, self.image_size, train, self.cfg.augment, self.cfg.seed)

    def normalized_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (pinned, or already on the device from the batch ring) -> (x/255 - mean)/std in float on the device, in two kernels
        (convert with the layout change, then one multiply-add) rather than five: in a
        launch-bound model such as resnet18 at batch 32, every launch is CPU time of the step."""
        x = images.to(self.device, non_blocking=True)
        if not hasattr(self, "_norm") or self._norm[0].device != x.device:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(1, 3, 1, 1)
            self._norm = ((-mean / std).float().to(x.device), (1.0 / (255.0 * std)).float().to(x.device))
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.to(dtype=torch.float32, memory_format=layout)
        return torch.addcmul(self._norm[0], x, self._norm[1])

    def forward_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(self.normalized_input(batch["images"]))
        loss = F.cross_entropy(logits.float(), batch["labels"].to(self.device, non_blocking=True))
        return loss, {"cross_entropy": loss}

    def validate(self) -> dict[str, float]:
        acc = ClassificationAccumulator(len(self.class_names), self.class_names)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for batch in self.val_batches():
            labels = batch["labels"].to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.model(self.normalized_input(batch["images"]))
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            count += labels.shape[0]
            acc.update(logits.cpu(), batch["labels"])
        m = acc.compute()
        self.val_details = {"confusion_matrix": m["confusion_matrix"], "per_class_accuracy": m["per_class_accuracy"]}
        return {"top1": m["top1"], "top5": m["top5"], "val_loss": float(loss_sum) / max(1, count)}

    def export_model(self, fmt: str, path: str) -> dict[str, Any]:
        model = compat.unwrap_model(self.model).float().cpu().eval()
        if self.channels_last:
            model = model.to(memory_format=torch.contiguous_format)
        return export.export_classifier(model, self.image_size, self.mean, self.std, path)


class TorchvisionClassificationTrainer(ClassificationTrainer):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.architecture not in tvm.CLASSIFICATION_ARCHITECTURES:
            raise ConfigError(
                "architecture",
                f"{cfg.architecture!r} is not a torchvision classifier cvtrain supports; "
                f"choose one of {', '.join(tvm.CLASSIFICATION_ARCHITECTURES)}",
            )

    @classmethod
    def default_image_size(cls, architecture: str) -> int:
        return tvm.CLASSIFICATION_ARCHITECTURES.get(architecture, 224)

    def create_model(self) -> torch.nn.Module:
        return tvm.build_classifier(self.cfg.architecture, len(self.class_names))
