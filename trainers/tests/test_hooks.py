"""Named hooks: default no-op callbacks copied per instance, fired in a fixed order."""

import pytest

from cvtrain import callbacks
from cvtrain.config import TrainingConfig
from cvtrain.events import EventEmitter
from cvtrain.registry import resolve_trainer


def tiny_classifier_config(datasets, tmp_path, **over):
    raw = {
        "task": "classification",
        "architecture": "resnet18",
        "dataset": {"path": datasets["folder"], "format": "image_folder"},
        "output_dir": str(tmp_path / "out"),
        "epochs": 2,
        "batch_size": 4,
        "image_size": 32,
        "num_workers": 0,
        "max_batches_per_epoch": 2,
        "max_val_batches": 1,
        "optimizer": "adamw",
        "learning_rate": 0.001,
        "export": ["onnx"],
    }
    raw.update(over)
    return TrainingConfig.from_dict(raw)


def test_callbacks_are_copied_per_instance(datasets, tmp_path):
    cfg = tiny_classifier_config(datasets, tmp_path)
    cls = resolve_trainer(cfg)
    a, b = cls(cfg), cls(cfg)
    a.add_callback("on_train_start", lambda t: None)
    assert len(a.callbacks["on_train_start"]) == 2
    assert len(b.callbacks["on_train_start"]) == 1
    assert all(len(fns) == 1 for fns in callbacks.DEFAULT_CALLBACKS.values())
    with pytest.raises(ValueError, match="unknown hook"):
        a.add_callback("on_epoch_done", lambda t: None)


def test_hook_order(datasets, tmp_path, check_events):
    cfg = tiny_classifier_config(datasets, tmp_path)
    events = EventEmitter(None, keep=True)
    trainer = resolve_trainer(cfg)(cfg, events)
    fired = []
    for hook in callbacks.HOOKS:
        trainer.add_callback(hook, lambda t, hook=hook: fired.append((hook, t.epoch, t.step)))
    result = trainer.fit()
    assert result.status == "completed", result.error
    check_events(events.events)

    saves = {}
    for e in events.events:
        if e["type"] == "checkpoint":
            saves[e["epoch"]] = saves.get(e["epoch"], 0) + 1
    expected = [("on_pretrain_routine_start", 0, 0), ("on_pretrain_routine_end", 0, 0), ("on_train_start", 0, 0)]
    for epoch in range(2):
        expected.append(("on_train_epoch_start", epoch, 0))
        for step in range(2):
            expected += [
                ("on_train_batch_start", epoch, step),
                ("on_before_optimizer_step", epoch, step),
                ("on_train_batch_end", epoch, step + 1),
            ]
        expected += [
            ("on_train_epoch_end", epoch, 2),
            ("on_val_start", epoch, 2),
            ("on_val_batch_start", epoch, 2),
            ("on_val_batch_end", epoch, 2),
            ("on_val_end", epoch, 2),
            ("on_fit_epoch_end", epoch, 2),
        ]
        expected += [("on_model_save", epoch, 2)] * saves[epoch + 1]
    expected += [("on_train_end", 1, 2), ("on_export_start", 1, 2), ("on_export_end", 1, 2), ("on_teardown", 1, 2)]
    assert fired == expected
    # The last epoch always writes last.pt; epoch 1 is always the best so far.
    assert saves[1] >= 1 and saves[2] >= 1
