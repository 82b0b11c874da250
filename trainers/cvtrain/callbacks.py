"""Named trainer hooks with default no-op callbacks, copied per trainer instance.

Order within one run (tests/test_hooks.py asserts it):

    on_pretrain_routine_start, on_pretrain_routine_end, on_train_start,
    per epoch: on_train_epoch_start, (on_train_batch_start, on_before_optimizer_step,
               on_train_batch_end)*, on_train_epoch_end, on_val_start,
               (on_val_batch_start, on_val_batch_end)*, on_val_end, on_fit_epoch_end,
               on_model_save*,
    on_train_end, (on_export_start, on_export_end)*, on_teardown

A graceful stop runs on_stop (after on_model_save of the stop checkpoint) and then
on_teardown. Each callback receives the trainer.
"""

from __future__ import annotations

from typing import Any, Callable

HOOKS = (
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_val_start",
    "on_val_batch_start",
    "on_val_batch_end",
    "on_val_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
    "on_export_start",
    "on_export_end",
    "on_stop",
    "on_teardown",
)


def _noop(trainer: Any) -> None:
    """Default callback: subclasses and users add their own next to it."""


Callback = Callable[[Any], None]
DEFAULT_CALLBACKS: dict[str, list[Callback]] = {name: [_noop] for name in HOOKS}


def get_default_callbacks() -> dict[str, list[Callback]]:
    """A fresh copy: adding a callback to one trainer must never leak into another."""
    return {name: list(fns) for name, fns in DEFAULT_CALLBACKS.items()}
