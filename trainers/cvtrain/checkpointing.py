"""Checkpoints: what one holds, how it is written, read back, checked and restored.

A checkpoint holds everything an exact resume needs: model, optimizer, scheduler, AMP scaler,
RNG states (python, numpy, torch, cuda), the position (epochs done, batches done in the next
one), the epoch's running loss sums, history, best-so-far and early-stopping counters, corrupt
samples seen, and what a family adds through `BaseTrainer.extra_state` (cvdet: its EMA). The
trainer decides when to save (trainer.py); this module is the state and the files.

Files are written once (temp file, fsync, rename) and further names are hard links, so a
crash or SIGKILL leaves either the old file or the new one under every name.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import TYPE_CHECKING, Any, Iterator

import torch

from . import compat
from .config import TrainingConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .trainer import BaseTrainer

CHECKPOINT_FORMAT = "cvtrain-checkpoint"
WEIGHTS_FORMAT = "cvtrain-weights"
CHECKPOINT_VERSION = 1
# Keys of run.json that must match between a checkpoint and the run resuming it: they
# define the model, the classes, or what "step N of epoch E" means.
RESUME_MUST_MATCH = ("task", "framework", "architecture", "batch_size", "max_batches_per_epoch", "seed", "image_size")


# ------------------------------------------------------------------ files


def file_digest(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return os.path.getsize(path), h.hexdigest()


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`, so
    a crash or SIGKILL leaves either the old file or the new one, never half of one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_link(src: str, dst: str) -> None:
    """Make `dst` a second name of `src` (same bytes, no second write), atomically."""
    tmp = f"{dst}.tmp.{os.getpid()}"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def checkpoint_path(checkpoint_dir: str, kind: str, epoch: int) -> str:
    """last and stop share last.pt (a stop checkpoint is the newest resumable state)."""
    name = {"last": "last.pt", "stop": "last.pt", "best": "best.pt"}.get(kind, f"epoch_{epoch:04d}.pt")
    return os.path.join(checkpoint_dir, name)


def write(state: dict[str, Any], names: list[tuple[str, str]]) -> Iterator[tuple[str, str, int, str]]:
    """Write `state` under the first of `names` (kind, path) and link the others to it,
    yielding (kind, path, size, sha256) as each name appears, so the caller announces each
    before the next is made."""
    first: str | None = None
    size, digest = 0, ""
    for kind, path in names:
        if first is None:
            atomic_save(state, path)
            first = path
            size, digest = file_digest(path)
        else:
            atomic_link(first, path)
        yield kind, path, size, digest


# ------------------------------------------------------------------ state


def capture(trainer: BaseTrainer, epoch: int, step: int) -> dict[str, Any]:
    """The checkpoint of `trainer` at `epoch` epochs done and `step` batches into the next."""
    acc = trainer._acc
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "torch_version": str(torch.__version__),
        "config": trainer.cfg.to_dict(),
        "task": trainer.task,
        "class_names": list(trainer.class_names),
        "image_size": trainer.image_size,
        "model": compat.unwrap_model(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "epoch": epoch,
        "step": step,
        "global_step": trainer.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "rng": compat.rng_state(),
        "epoch_acc": {
            "loss": acc["loss"].cpu(),
            "parts": {k: v.cpu() for k, v in acc["parts"].items()},
            "steps": acc["steps"],
            "images": acc["images"],
        },
        "history": trainer.history,
        "best_metric": trainer.best_metric,
        "best_epoch": trainer.best_epoch,
        "epochs_without_improvement": trainer.epochs_without_improvement,
        "bad_samples": {k: dict(v) for k, v in trainer.problems.bad.items()},
        "extra": trainer.extra_state(),
    }


def restore(trainer: BaseTrainer, ckpt: dict[str, Any]) -> None:
    """Put `capture`'s state back into a set-up trainer. The RNG states are only kept in
    `trainer._resume_state`: the loop restores them where they were captured."""
    compat.unwrap_model(trainer.model).load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.load_extra_state(ckpt.get("extra") or {})
    trainer.epoch, trainer.step = ckpt["epoch"], ckpt["step"]
    trainer.global_step = ckpt["global_step"]
    acc = ckpt["epoch_acc"]
    trainer._acc = {
        "loss": acc["loss"].to(trainer.device),
        "parts": {k: v.to(trainer.device) for k, v in acc["parts"].items()},
        "steps": acc["steps"],
        "images": acc["images"],
    }
    trainer.history = list(ckpt["history"])
    trainer.best_metric, trainer.best_epoch = ckpt["best_metric"], ckpt["best_epoch"]
    trainer.epochs_without_improvement = ckpt["epochs_without_improvement"]
    trainer.problems.restore(ckpt["bad_samples"])
    if trainer.history:
        trainer.last_metrics = dict(trainer.history[-1]["metrics"])
    trainer._resume_state = ckpt["rng"]


def weights(trainer: BaseTrainer, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """weights/best.pt: one model's tensors and what export and inference need to rebuild it."""
    return {
        "format": WEIGHTS_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": trainer.cfg.to_dict(),
        "task": trainer.task,
        "class_names": list(trainer.class_names),
        "image_size": trainer.image_size,
        "epoch": trainer.best_epoch,
        "metric": {trainer.main_metric: trainer.best_metric},
        "model": state,
    }


# ------------------------------------------------------------------ reading and checking


def resume_path(cfg: TrainingConfig) -> str | None:
    """The checkpoint `resume_from` names; None for a fresh start ('last' before one exists)."""
    path = cfg.resume_from
    if not path:
        return None
    if path == "last":
        path = os.path.join(cfg.checkpoint_dir, "last.pt")
        if not os.path.isfile(path):
            print(f"cvtrain: resume_from 'last': no {path} yet, starting fresh", file=sys.stderr)
            return None
    return path


def read(path: str) -> dict[str, Any]:
    """A cvtrain checkpoint of this version, or ConfigError('resume_from')."""
    try:
        ckpt = compat.load(path)
    except Exception as exc:
        raise ConfigError("resume_from", f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError("resume_from", f"{path} is not a cvtrain checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ConfigError("resume_from", f"{path} has checkpoint version {ckpt.get('version')}, expected {CHECKPOINT_VERSION}")
    return ckpt


def verify_resumable(ckpt: dict[str, Any], cfg: TrainingConfig, class_names: list[str], steps_per_epoch: int) -> None:
    """Refuse a checkpoint whose model, classes or step numbering differ from this run's."""
    saved = ckpt["config"]
    mine = cfg.to_dict()
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != mine.get(key):
            raise ConfigError("resume_from", f"checkpoint was trained with {key}={saved.get(key)!r}, this run has {mine.get(key)!r}")
    if list(ckpt["class_names"]) != list(class_names):
        raise ConfigError("resume_from", f"checkpoint classes {ckpt['class_names']} differ from the dataset's {class_names}")
    if ckpt["steps_per_epoch"] != steps_per_epoch:
        raise ConfigError(
            "resume_from",
            f"checkpoint had {ckpt['steps_per_epoch']} steps per epoch, this dataset gives {steps_per_epoch}",
        )


def pretrained_state_dict(path: str) -> dict[str, Any]:
    """The state dict in a `pretrained_weights` file: a cvtrain checkpoint or weights file,
    a {"state_dict": ...} wrapper, or a bare state dict; else ConfigError('pretrained_weights')."""
    try:
        obj = compat.load(path)
    except Exception as exc:
        raise ConfigError("pretrained_weights", f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict) and obj.get("format") in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConfigError("pretrained_weights", f"{path} holds no state dict")
    return obj
