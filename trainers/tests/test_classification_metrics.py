"""Classification metrics on hand-computed cases, batching, and numpy/torch parity."""

from __future__ import annotations

import numpy as np
import pytest

from cvtrain.metrics import ClassificationAccumulator, classification_metrics

# 4 samples, 6 classes (k = 5)
LOGITS = np.array(
    [
        [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # target 1: top-1 hit
        [0.8, 0.1, 0.05, 0.02, 0.02, 0.01],  # target 2: ranked 3rd, top-5 hit only
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # target 5: ranked 6th, miss
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # target 2: top-1 hit
    ],
    dtype=np.float32,
)
TARGETS = np.array([1, 2, 5, 2])


def test_hand_computed_case():
    r = classification_metrics(LOGITS, TARGETS, num_classes=6, class_names=list("abcdef"))
    assert r["top1"] == 0.5
    assert r["top5"] == 0.75
    cm = np.zeros((6, 6), dtype=int)
    cm[1, 1] = 1
    cm[2, 0] = 1
    cm[5, 0] = 1
    cm[2, 2] = 1
    assert r["confusion_matrix"] == cm.tolist()
    assert r["per_class_accuracy"] == {"a": None, "b": 1.0, "c": 0.5, "d": None, "e": None, "f": 0.0}


def test_k_is_capped_at_the_number_of_classes():
    logits = np.array([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05]])
    r = classification_metrics(logits, [0, 1], num_classes=3)
    assert r["top1"] == 0.0
    assert r["top5"] == 1.0  # top-3 of 3 classes always holds the target
    assert list(r["per_class_accuracy"]) == ["0", "1", "2"]


def test_ties_rank_the_lower_class_first():
    logits = np.zeros((6, 6))
    r = classification_metrics(logits, np.arange(6), num_classes=6)
    # every prediction is class 0; target t has rank t among equal scores
    assert r["top1"] == pytest.approx(1 / 6)
    assert r["top5"] == pytest.approx(5 / 6)
    assert [row[0] for row in r["confusion_matrix"]] == [1] * 6


def test_hard_predictions():
    r = classification_metrics(np.array([1, 0, 2, 2]), TARGETS, num_classes=6)
    assert r["top1"] == 0.5
    assert r["top5"] is None  # no scores, no ranking beyond the single guess
    assert r["confusion_matrix"][2] == [1, 0, 1, 0, 0, 0]
    binary = classification_metrics(np.array([0, 0]), np.array([0, 0]), num_classes=1)
    assert binary["top1"] == 1.0 and binary["top5"] == 1.0


def test_accumulator_over_batches_equals_one_shot():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(103, 10))
    targets = rng.integers(0, 10, 103)
    acc = ClassificationAccumulator(10)
    for s in range(0, 103, 16):
        acc.update(logits[s : s + 16], targets[s : s + 16])
    whole = classification_metrics(logits, targets, num_classes=10)
    assert acc.compute() == whole
    assert whole["top1"] == np.mean(np.argmax(logits, 1) == targets)
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    assert whole["top5"] == np.mean((top5 == targets[:, None]).any(axis=1))
    assert sum(map(sum, whole["confusion_matrix"])) == 103
    acc.reset()
    assert acc.compute()["top1"] is None


def test_numpy_and_torch_inputs_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    targets = rng.integers(0, 7, 50)
    expected = classification_metrics(logits, targets, num_classes=7)
    assert classification_metrics(torch.from_numpy(logits), torch.from_numpy(targets), num_classes=7) == expected
    # half-precision logits as an AMP model emits them; values chosen exactly representable
    small = np.round(logits * 8) / 8
    assert classification_metrics(torch.from_numpy(small).bfloat16(), torch.from_numpy(targets), 7) == \
        classification_metrics(small, targets, 7)
    acc = ClassificationAccumulator(7)
    acc.update(torch.from_numpy(logits[:20]), torch.from_numpy(targets[:20]))
    acc.update(logits[20:], targets[20:])
    assert acc.compute() == expected


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="targets"):
        classification_metrics(LOGITS, [1, 2, 6, 0], num_classes=6)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(LOGITS, [1, 2, 3], num_classes=6)
    with pytest.raises(ValueError, match="class names"):
        ClassificationAccumulator(3, class_names=["a", "b"])
