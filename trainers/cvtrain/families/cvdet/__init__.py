"""cvdet: the package's own YOLO-style anchor-free detector (framework "cvtrain").

Architectures cvdet_n / cvdet_s / cvdet_m (width and depth multiples of one design, see
model.py). Trained inside cvtrain's loop like every family: BaseTrainer's checkpoints, exact
resume, SIGTERM, AMP, channels_last, the batch ring and the COCO evaluator apply unchanged;
this trainer adds mosaic for all but the last epochs (mosaic.py) and an EMA of the weights,
which validation, weights/best.pt and the ONNX export use and checkpoints carry.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ... import compat, export, settings
from ...datasets.loading import DetectionDataset
from ...errors import ConfigError
from ...tasks.detection import DetectionTrainer
from .detector import CvDetector, ExportGraph, ModelEMA, postprocess_numpy
from .model import SIZES

ARCHITECTURES = tuple(SIZES)


def mosaic_epochs(epochs: int) -> int:
    """Epochs (from the first) that train on mosaics; the rest see whole images."""
    return epochs - max(1, math.ceil(epochs * settings.CVDET_CLOSE_MOSAIC_FRACTION))


class CvdetTrainer(DetectionTrainer):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.architecture not in SIZES:
            raise ConfigError("architecture", f"{cfg.architecture!r} is not a cvtrain detector; choose one of {', '.join(ARCHITECTURES)}")

    def make_dataset(self, samples: list[Any], train: bool) -> DetectionDataset:
        if not train:
            return DetectionDataset(samples, self.image_size, False, False, self.cfg.seed)
        from .mosaic import MosaicDetectionDataset

        return MosaicDetectionDataset(samples, self.image_size, True, self.cfg.augment, self.cfg.seed, mosaic_epochs(self.cfg.epochs))

    def create_model(self) -> nn.Module:
        return CvDetector(self.cfg.architecture, len(self.class_names))

    def auto_channels_last(self) -> bool:
        # Convolutions only: NHWC with AMP on CUDA throughout.
        return self.device.type == "cuda" and self.amp_dtype is not None

    def _setup_model(self) -> None:
        super()._setup_model()
        total = max(1, self.cfg.epochs * self.steps_per_epoch)
        window = max(1.0, settings.CVDET_EMA_RUN_FRACTION * total)
        decay = min(settings.CVDET_EMA_DECAY, 1.0 - 1.0 / window)
        self.ema = ModelEMA(compat.unwrap_model(self.model), min(settings.CVDET_EMA_TAU, window), decay)

    def forward_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = self.images_to_device(batch["images"])
        losses = self.model(images, self.targets_to_device(batch["targets"]))
        return losses["loss"], {k: v for k, v in losses.items() if k != "loss"}

    def train_step(self, batch: dict[str, Any]) -> None:
        super().train_step(batch)
        self.ema.update(compat.unwrap_model(self.model))

    def predict(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        model = self.ema.module if getattr(self, "ema", None) is not None else self.model
        return model(images)

    # --- state ------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        if "ema" in extra:
            self.ema.load_state_dict(extra["ema"])

    def inference_state(self, checkpoint: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        if checkpoint is None:
            return self.ema.module.state_dict()
        ema = (checkpoint.get("extra") or {}).get("ema")
        return ema["model"] if ema else checkpoint["model"]

    def load_for_export(self, state: dict[str, Any]) -> None:
        extra = state.get("extra") or {}
        if "ema" in extra:  # a checkpoint: export the averaged weights, as training does
            state = dict(state, model=extra["ema"]["model"])
        super().load_for_export(state)

    def export_model(self, fmt: str, path: str) -> dict[str, Any]:
        model = compat.unwrap_model(self.model).float().cpu().eval()
        example = self.export_example()
        if example is None:
            example = torch.rand(1, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))
        if self.channels_last:
            model = model.to(memory_format=torch.contiguous_format)
        graph = ExportGraph(model, self.image_size)
        return export.export_dense_detector(graph, example, path, postprocess_numpy, settings.CVDET_SCORE_THRESH, settings.DETECTIONS_PER_IMAGE)


__all__ = ["ARCHITECTURES", "CvdetTrainer", "CvDetector", "postprocess_numpy", "mosaic_epochs"]
