"""Classification metrics: top-1 / top-k accuracy, confusion matrix, per-class accuracy.

Inputs are numpy arrays, lists or torch tensors (any device, any float dtype);
torch is never imported here, so numpy-only callers do not need it.

Conventions:

* ``confusion_matrix[i][j]`` counts samples of true class ``i`` predicted as ``j``
  (rows are targets, as in scikit-learn).
* ``top5`` is top-k accuracy with ``k = min(5, num_classes)``; the key stays
  ``top5`` so dashboards see one name whatever the number of classes.
* Ties in scores rank the lower class index first, so top-1 agrees with
  ``argmax`` and top-k does not depend on a sort implementation.
* ``per_class_accuracy`` is recall per class (correct / samples of that class),
  keyed by class name (``str(index)`` without names).
* A value with nothing to average over is ``None`` (JSON null) rather than 0,
  which would read as a real result: accuracy before any sample, per-class
  accuracy of a class absent from the targets, and ``top5`` when only hard
  predictions (no scores) were given and k > 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .coco_eval import _to_numpy

__all__ = ["ClassificationAccumulator", "classification_metrics"]


class ClassificationAccumulator:
    """Accumulates classification results batch by batch.

    ``update(logits, targets)`` takes scores of shape (N, C) (logits or
    probabilities; only their order matters) or hard predictions of shape (N,),
    and integer targets of shape (N,). ``compute()`` returns the same dict as
    :func:`classification_metrics` for everything seen so far.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        self.k = min(5, self.num_classes)
        self.reset()

    def reset(self) -> None:
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._topk_correct = 0
        self._topk_seen = 0  # samples that came with scores, the only ones with a top-k

    def update(self, logits_or_preds: Any, targets: Any) -> None:
        x = np.asarray(_to_numpy(logits_or_preds))
        y = np.asarray(_to_numpy(targets)).reshape(-1)
        C = self.num_classes
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise ValueError("targets must be integer class indices")
        y = y.astype(np.int64, copy=False)
        if y.size and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"targets must lie in [0, {C}), got range [{y.min()}, {y.max()}]")

        if x.ndim == 2:
            if x.shape != (y.shape[0], C):
                raise ValueError(f"scores must have shape (N, {C}) = ({y.shape[0]}, {C}), got {x.shape}")
            if x.dtype == np.float16:
                x = x.astype(np.float32)
            target_score = x[np.arange(y.shape[0]), y][:, None]
            # Rank of the target among the classes, ties broken by class index.
            rank = (x > target_score).sum(axis=1) + (
                (x == target_score) & (np.arange(C)[None, :] < y[:, None])
            ).sum(axis=1)
            preds = np.argmax(x, axis=1) if y.shape[0] else np.zeros(0, dtype=np.int64)
            self._topk_correct += int((rank < self.k).sum())
            self._topk_seen += int(y.shape[0])
        elif x.ndim == 1:
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{x.shape[0]} predictions for {y.shape[0]} targets")
            preds = x.astype(np.int64, copy=False)
            if preds.size and (preds.min() < 0 or preds.max() >= C):
                raise ValueError(f"predictions must lie in [0, {C})")
            if self.k == 1:
                self._topk_correct += int((preds == y).sum())
                self._topk_seen += int(y.shape[0])
        else:
            raise ValueError(f"expected scores (N, C) or predictions (N,), got shape {x.shape}")
        self._confusion += np.bincount(y * C + preds, minlength=C * C).reshape(C, C)

    def compute(self) -> dict:
        cm = self._confusion
        n = int(cm.sum())
        correct = int(np.trace(cm))
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        support = cm.sum(axis=1)
        per_class = {
            name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(names)
        }
        top5 = None
        if n and self._topk_seen == n:
            top5 = self._topk_correct / n
        return {
            "top1": correct / n if n else None,
            "top5": top5,
            "confusion_matrix": cm.tolist(),
            "per_class_accuracy": per_class,
        }


def classification_metrics(
    logits_or_preds: Any,
    targets: Any,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict:
    """``{"top1", "top5", "confusion_matrix", "per_class_accuracy"}`` for one set of outputs.

    See the module docstring for conventions; ``top5`` uses k = min(5, num_classes).
    """
    acc = ClassificationAccumulator(num_classes, class_names)
    acc.update(logits_or_preds, targets)
    return acc.compute()
