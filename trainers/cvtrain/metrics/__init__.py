"""Evaluation metrics: COCO bbox mAP (pycocotools-exact, numpy only) and classification."""

from .classification import ClassificationAccumulator, classification_metrics
from .coco_eval import STAT_NAMES, CocoEvaluator, evaluate_coco, evaluate_files, xyxy_to_xywh

__all__ = [
    "STAT_NAMES",
    "ClassificationAccumulator",
    "CocoEvaluator",
    "classification_metrics",
    "evaluate_coco",
    "evaluate_files",
    "xyxy_to_xywh",
]
