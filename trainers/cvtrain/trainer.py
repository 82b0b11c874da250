"""BaseTrainer: the run (set-up, the epoch loop, hooks, events, when to checkpoint, outputs).

What a checkpoint holds and its files: checkpointing.py. Stop signals: stopping.py routes
them to `request_stop`. Device and precision: devices.py. Skipped samples: datasets/problems.py.

Tasks (tasks/) implement the model-facing parts: create_model, forward_train, validate,
export_model. Families (families/) pick builders. Custom trainers subclass a task trainer
or BaseTrainer itself and register by entry point or import path (registry.py).

Exact resume. A run resumed from any checkpoint continues bit-for-bit on CPU because:
sample order depends only on (seed, epoch) and augmentation only on (seed, epoch, index);
the DataLoader draws from a private generator, never the global RNG; checkpoints hold
model, optimizer, scheduler, scaler, RNG states (python, numpy, torch, cuda), the
position inside the epoch and the epoch's running loss sums; the sampler skips consumed
batches without loading them; and global RNG states are restored at the same point of
the loop where they were captured.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from . import callbacks as cb
from . import checkpointing, compat, settings, stopping
from .checkpointing import atomic_save, file_digest
from .config import TrainingConfig
from .datasets.formats import read_splits
from .datasets.batch_ring import RingLoader, ring_supported
from .datasets.loading import EpochBatchSampler, make_loader, resolve_num_workers
from .datasets.problems import SampleProblems
from .devices import amp_dtype, describe_device, resolve_device
from .errors import ConfigError, CvtrainError, DatasetError, TrainingDiverged
from .events import EventEmitter


def _data_wait(seconds: float | None, wall: float) -> dict[str, float]:
    """The event field data_wait_fraction, absent when the loop did not measure it."""
    if seconds is None:
        return {}
    return {"data_wait_fraction": min(1.0, max(0.0, seconds / max(1e-9, wall)))}


@dataclass
class RunResult:
    status: str  # completed | stopped | failed
    exit_code: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None


class _Stop(Exception):
    """Unwinds the loop to the graceful-stop path."""


class BaseTrainer:
    #: "object-detection" or "classification"; custom trainers may use their own.
    task = ""
    #: Key of the flat validation metrics that selects `best` (higher is better).
    main_metric = ""
    #: One training iterator for the whole run: the DataLoader workers decode the next epoch's
    #: first batches while this epoch's last ones train and while it validates. Batch order and
    #: content depend only on (seed, epoch, index), so this changes timing, never results.
    load_across_epochs = True

    def __init__(self, config: TrainingConfig, events: EventEmitter | None = None, callbacks: dict | None = None):
        self.cfg = config
        self.events = events or EventEmitter(None, config.session_id)
        self.callbacks = cb.get_default_callbacks()
        for hook, fns in (callbacks or {}).items():
            for fn in fns:
                self.add_callback(hook, fn)
        self.stop_requested: str | None = None
        self._warned_page_lock = False
        self._epoch_data_wait: float | None = None
        # The training batches' iterator and the (epoch, step) its next batch belongs to.
        self._train_iter: Iterator[dict[str, Any]] | None = None
        self._train_iter_at: tuple[int, int] | None = None
        self.model: nn.Module | None = None
        self.class_names: list[str] = []
        self.image_size = config.image_size or self.default_image_size(config.architecture)
        self.device = torch.device("cpu")
        self.amp_dtype: torch.dtype | None = None
        self.channels_last = False
        # Position: `epoch` epochs completed, `step` batches done in the current one.
        self.epoch = 0
        self.step = 0
        self.global_step = 0
        self.steps_per_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0
        self.problems = SampleProblems(self.events, config.max_corrupt_fraction)
        self.val_details: dict[str, Any] = {}
        self.last_metrics: dict[str, float] = {}
        self._resume_state: dict[str, Any] | None = None
        self._val_interrupted = False
        # (epoch, step) of the newest checkpoints/last.pt this process wrote.
        self._last_saved_position: tuple[int, int] | None = None

    # ------------------------------------------------------------------ hooks

    def add_callback(self, hook: str, fn: cb.Callback) -> None:
        if hook not in self.callbacks:
            raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(cb.HOOKS)}")
        self.callbacks[hook].append(fn)

    def run_callbacks(self, hook: str) -> None:
        for fn in self.callbacks[hook]:
            fn(self)

    # ------------------------------------------------------- subclass interface

    @classmethod
    def check_config(cls, cfg: TrainingConfig) -> None:
        """Reject configs this trainer cannot run (raise ConfigError naming the key)."""

    @classmethod
    def default_image_size(cls, architecture: str) -> int:
        return 224

    def make_dataset(self, samples: list[Any], train: bool) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def create_model(self) -> nn.Module:
        raise NotImplementedError

    def forward_train(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss to minimise and its named components (tensors, not synced)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Flat validation metrics; iterate `self.val_batches()`. May fill self.val_details."""
        raise NotImplementedError

    def export_model(self, fmt: str, path: str) -> dict[str, Any]:
        """Write the model in `fmt` to `path`; returns extra `artifact` event fields."""
        raise NotImplementedError(f"{type(self).__name__} cannot export {fmt}")

    # ------------------------------------------------------------ data

    def prepare_dataset(self) -> None:
        cfg = self.cfg
        train, val = read_splits(cfg.dataset.path, cfg.dataset.format, cfg.dataset.train_split, cfg.dataset.val_split)
        self.class_names = list(train.class_names)
        for name, index in (("train", train), ("val", val)):
            self.problems.report_index(name, index)
        if not train.samples:
            raise DatasetError(f"split '{cfg.dataset.train_split}' has no usable samples in {cfg.dataset.path}")
        if not val.samples:
            raise DatasetError(f"split '{cfg.dataset.val_split}' has no usable samples in {cfg.dataset.path}")
        self.train_dataset = self.make_dataset(train.samples, train=True)
        self.val_dataset = self.make_dataset(val.samples, train=False)

    def _build_loaders(self) -> None:
        cfg = self.cfg
        workers = resolve_num_workers(cfg.num_workers)
        pin = self.device.type == "cuda"
        # drop_last: a final batch of 1 breaks BatchNorm in training and skews the loss.
        self.train_sampler = EpochBatchSampler(
            len(self.train_dataset), cfg.batch_size, cfg.seed, shuffle=True, drop_last=True, max_batches=cfg.max_batches_per_epoch
        )
        self.val_sampler = EpochBatchSampler(
            len(self.val_dataset), cfg.batch_size, cfg.seed, shuffle=False, drop_last=False, max_batches=cfg.max_val_batches
        )
        self.train_loader = self._train_loader(workers, pin)
        self.val_loader = make_loader(self.val_dataset, self.val_sampler, workers, pin)
        self.steps_per_epoch = self.train_sampler.batches_per_epoch()
        self.num_workers = workers

    def _train_loader(self, workers: int, pin: bool) -> Any:
        """The batch ring (datasets/batch_ring.py) for cvtrain's own datasets; the stock
        DataLoader for a custom trainer's, or when CVTRAIN_BATCH_RING=0."""
        if os.environ.get("CVTRAIN_BATCH_RING", "1") != "0" and ring_supported(self.train_dataset):
            shape = (3, self.image_size, self.image_size)
            return RingLoader(self.train_dataset, self.train_sampler, workers, self.cfg.batch_size, shape, self.device)
        return make_loader(self.train_dataset, self.train_sampler, workers, pin)

    def _warn_if_not_page_locked(self) -> None:
        ring = getattr(self.train_loader, "ring", None)
        if ring is not None and self.device.type == "cuda" and ring.page_locked is False and not self._warned_page_lock:
            self._warned_page_lock = True
            self.events.emit(
                "warning",
                code="page_lock_failed",
                message="could not page-lock the training batch ring; each batch is copied to pinned memory first",
                count=1,
            )

    def val_batches(self) -> Iterator[dict[str, Any]]:
        """Validation batches with hooks, corrupt-sample accounting and stop checks."""
        self.val_sampler.set_epoch(0, 0)
        for batch in self.val_loader:
            if self.stop_requested:
                self._val_interrupted = True
                return
            if batch["bad"]:
                self.problems.record("val", batch["bad"], len(self.val_dataset))
            if not batch["size"]:
                continue
            self.run_callbacks("on_val_batch_start")
            yield batch
            self.run_callbacks("on_val_batch_end")

    # ------------------------------------------------------------ device helpers

    def images_to_device(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (pinned) -> float 0..1 on the device; the copy overlaps compute."""
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float().div_(255.0)

    def autocast(self) -> Any:
        return compat.autocast(self.device.type, self.amp_dtype, self.amp_dtype is not None)

    def _setup_device(self) -> None:
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            compat.configure_cuda_backend()
        self.amp_dtype = amp_dtype(self.device, self.cfg.amp, self._warn)
        cl = self.cfg.channels_last
        self.channels_last = self.auto_channels_last() if cl == "auto" else bool(cl)

    def _warn(self, code: str, message: str) -> None:
        self.events.emit("warning", code=code, message=message, count=1)

    def auto_channels_last(self) -> bool:
        """`channels_last: auto`: where NHWC is measured to be faster (convolution-heavy models
        with AMP on CUDA); torchvision's detectors mix in ops that convert back and forth."""
        return self.device.type == "cuda" and self.amp_dtype is not None and self.task == "classification"

    @property
    def amp_name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "off")  # type: ignore[arg-type]

    # ------------------------------------------------------------ optimisation

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=settings.SGD_MOMENTUM)
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=cfg.learning_rate, betas=settings.ADAM_BETAS)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=settings.ADAM_BETAS)
        total = max(1, cfg.epochs * self.steps_per_epoch)
        warmup = min(total, round(cfg.warmup_epochs * self.steps_per_epoch))
        schedule = cfg.lr_schedule

        def factor(step: int) -> float:
            if step < warmup:
                return settings.WARMUP_START_FACTOR + (1 - settings.WARMUP_START_FACTOR) * step / warmup
            if schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return settings.COSINE_FINAL_FACTOR + (1 - settings.COSINE_FINAL_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = compat.grad_scaler(enabled=self.amp_dtype == torch.float16)

    def train_step(self, batch: dict[str, Any]) -> None:
        with self.autocast():
            loss, parts = self.forward_train(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.run_callbacks("on_before_optimizer_step")
        if self.cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        loss_d = loss.detach().double()
        self._acc["loss"] += loss_d
        for name, value in parts.items():
            if name not in self._acc["parts"]:
                self._acc["parts"][name] = torch.zeros((), dtype=torch.float64, device=self.device)
            # A part that is the loss itself (a single-term loss) needs no second conversion.
            self._acc["parts"][name] += loss_d if value is loss else value.detach().double()
        self._acc["steps"] += 1
        self._acc["images"] += batch["size"]
        self._win["loss"] += loss_d
        self._win["steps"] += 1
        self._win["images"] += batch["size"]

    def _new_acc(self) -> dict[str, Any]:
        return {"loss": torch.zeros((), dtype=torch.float64, device=self.device), "parts": {}, "steps": 0, "images": 0}

    def _new_window(self) -> None:
        self._win = {
            "loss": torch.zeros((), dtype=torch.float64, device=self.device),
            "steps": 0,
            "images": 0,
            "data_wait": None,
            "t0": time.monotonic(),
        }

    def _maybe_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.cfg.progress_interval_s or not self._win["steps"]:
            return
        loss = float(self._win["loss"]) / self._win["steps"]  # the one device sync per interval
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training loss is {loss} at epoch {self.epoch + 1}, step {self.step}")
        spe = max(1, self.steps_per_epoch)
        self.events.emit(
            "progress",
            epoch=self.epoch + 1,
            step=self.step,
            steps_per_epoch=self.steps_per_epoch,
            fraction=min(1.0, (self.epoch * spe + self.step) / (self.cfg.epochs * spe)),
            loss=loss,
            images_per_sec=self._win["images"] / max(1e-9, now - self._win["t0"]),
            lr=self.optimizer.param_groups[0]["lr"],
            **_data_wait(self._win["data_wait"], now - self._win["t0"]),
        )
        self._last_progress = now
        self._new_window()

    def train_epoch(self, epoch: int, start_step: int) -> None:
        """Train epoch index `epoch` (0-based) from batch `start_step`."""
        self.model.train()
        self.step = start_step
        # Time blocked on the DataLoader (worker start-up and refill included) is reported as
        # data_wait_fraction: the share of training time an input-bound run loses to loading.
        t = time.perf_counter()
        if self._train_iter is None or self._train_iter_at != (epoch, start_step):
            # With load_across_epochs one iterator runs through the last epoch (see
            # EpochBatchSampler); it is made again only at the start of a run or a resume.
            through = self.cfg.epochs - 1 if self.load_across_epochs else None
            self.train_sampler.set_epoch(epoch, start_step, through_epoch=through)
            self._train_iter = iter(self.train_loader)
            self._warn_if_not_page_locked()
        self._train_iter_at = None  # consumed below; set again only when the epoch completes
        for _ in range(start_step, self.steps_per_epoch):
            batch = next(self._train_iter)
            self._add_data_wait(time.perf_counter() - t)
            if self.stop_requested:
                return
            if batch["bad"]:
                self.problems.record("train", batch["bad"], len(self.train_dataset))
            if batch["size"]:
                self.run_callbacks("on_train_batch_start")
                self.train_step(batch)
                self.global_step += 1
            self.step += 1
            if batch["size"]:
                self.run_callbacks("on_train_batch_end")
            self._maybe_progress()
            if self.stop_requested:
                return
            t = time.perf_counter()
        if self.load_across_epochs:
            self._train_iter_at = (epoch + 1, 0)

    def _add_data_wait(self, seconds: float) -> None:
        # None until measured: a subclass with its own train_epoch reports no figure, not 0.
        self._win["data_wait"] = (self._win["data_wait"] or 0.0) + seconds
        self._epoch_data_wait = (self._epoch_data_wait or 0.0) + seconds

    # ------------------------------------------------------------ checkpoints

    def checkpoint_state(self, epoch: int, step: int) -> dict[str, Any]:
        return checkpointing.capture(self, epoch, step)

    def extra_state(self) -> dict[str, Any]:
        """Family state a checkpoint carries beyond the model, optimizer, scheduler and RNGs
        (cvdet: its EMA weights); plain containers and tensors only (safe loading)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what `extra_state` returned, on resume (after the model's weights)."""

    def inference_state(self, checkpoint: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """The weights weights/best.pt and the exports hold, from a checkpoint (None: the
        live model): the trained model's, unless a family evaluates other ones (cvdet: EMA)."""
        if checkpoint is None:
            return compat.unwrap_model(self.model).state_dict()
        return checkpoint["model"]

    def save_checkpoint(self, kinds: list[str], epoch: int, step: int) -> dict[str, str]:
        """Write one checkpoint under every name in `kinds` (last, best, periodic, stop);
        the bytes are written once, other names are hard links. Returns kind -> path."""
        state = self.checkpoint_state(epoch, step)
        paths: dict[str, str] = {}
        for kind, path, size, digest in checkpointing.write(state, [(k, self.checkpoint_path(k, epoch)) for k in kinds]):
            if kind in ("last", "stop"):
                self._last_saved_position = (epoch, step)
            paths[kind] = path
            self.run_callbacks("on_model_save")
            self.events.emit("checkpoint", epoch=epoch, step=step, path=path, kind=kind, size_bytes=size, sha256=digest)
        return paths

    def checkpoint_path(self, kind: str, epoch: int) -> str:
        return checkpointing.checkpoint_path(self.cfg.checkpoint_dir, kind, epoch)

    def _load_resume(self) -> str | None:
        path = checkpointing.resume_path(self.cfg)
        if path is None:
            return None
        ckpt = checkpointing.read(path)
        checkpointing.verify_resumable(ckpt, self.cfg, self.class_names, self.steps_per_epoch)
        checkpointing.restore(self, ckpt)
        return os.path.abspath(path)

    # ------------------------------------------------------------ model setup

    def _setup_model(self) -> None:
        model = self.create_model()
        if self.cfg.pretrained_weights:
            self._load_pretrained(model, self.cfg.pretrained_weights)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        if self.cfg.compile:
            if compat.can_compile():
                self.model = torch.compile(model)
            else:
                self._warn("compile_unavailable", f"torch {torch.__version__} has no torch.compile; running eagerly")

    def _load_pretrained(self, model: nn.Module, path: str) -> None:
        from .families.torchvision_models import load_pretrained

        loaded, skipped = load_pretrained(model, checkpointing.pretrained_state_dict(path))
        if not loaded:
            raise ConfigError("pretrained_weights", f"no tensor in {path} matches {self.cfg.architecture}")
        if skipped:
            self.events.emit(
                "warning",
                code="pretrained_partial",
                message=f"loaded {loaded} tensors from {path}; skipped {len(skipped)} whose name or shape differ (e.g. {skipped[:3]})",
                count=len(skipped),
            )

    # ------------------------------------------------------------ the run

    def request_stop(self, reason: str) -> bool:
        """Stop at the next step boundary with a resumable checkpoint (stopping.py routes
        SIGTERM/SIGINT here). The first request wins; returns whether this one was it."""
        if self.stop_requested is not None:
            return False
        self.stop_requested = reason
        return True

    def fit(self) -> RunResult:
        """Train, validate, checkpoint and export; never raises for run failures (they
        become a `failed` event and a non-zero exit code in the result)."""
        restore_signals = stopping.route_stop_signals(self.request_stop)
        try:
            return self._fit()
        except _Stop:
            return RunResult("stopped", settings.EXIT_OK, dict(self.last_metrics))
        except CvtrainError as exc:
            self._emit_failed(exc)
            return RunResult("failed", exc.exit_code, error=exc)
        except Exception as exc:  # the run failed: report it rather than crash without an event
            self._emit_failed(exc)
            return RunResult("failed", settings.EXIT_FAILED, error=exc)
        finally:
            restore_signals()
            self._teardown()

    def _teardown(self) -> None:
        try:
            self.run_callbacks("on_teardown")
        finally:
            self._train_iter = None  # holds the training loader's workers
            for loader in ("train_loader", "val_loader"):
                # Ends persistent workers now rather than at interpreter exit.
                if hasattr(self, loader):
                    close = getattr(getattr(self, loader), "close", None)
                    if close is not None:
                        close()
                    delattr(self, loader)

    def _emit_failed(self, exc: BaseException) -> None:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        tail = "".join(tb).splitlines()[-settings.TRACEBACK_TAIL_LINES :]
        print("".join(tb), file=sys.stderr)
        self.events.emit(
            "failed",
            message=str(exc) or type(exc).__name__,
            error_type=type(exc).__name__,
            traceback_tail="\n".join(tail),
            exit_code=getattr(exc, "exit_code", settings.EXIT_FAILED),
        )

    def setup(self) -> str | None:
        """Device, dataset, loaders, model, optimizer and the resumed state: everything before
        the first batch. Returns the checkpoint resumed from, if any. `fit` calls it; the GPU
        benchmark calls it alone to time the pieces of a step."""
        self._setup_device()
        compat.seed_everything(self.cfg.seed)
        self.prepare_dataset()
        self._build_loaders()
        self._setup_model()
        self._build_optimizer()
        self._acc = self._new_acc()
        self._new_window()
        return self._load_resume()

    def _fit(self) -> RunResult:
        """Set up, train epoch after epoch until the last or early stopping, then write the
        outputs. A stop request unwinds from wherever it is seen through `_stop`."""
        self.run_callbacks("on_pretrain_routine_start")
        resumed_from = self.setup()
        self.run_callbacks("on_pretrain_routine_end")
        self._emit_started(resumed_from)
        if self._resume_state is not None:
            # Restored last, where the original run captured it: nothing between here and
            # the next batch draws from the global generators.
            compat.set_rng_state(self._resume_state)
        self.run_callbacks("on_train_start")
        self._last_progress = time.monotonic()
        self._new_window()
        early_stopped = False
        start_epoch, start_step = self.epoch, self.step
        for epoch in range(start_epoch, self.cfg.epochs):
            early_stopped = self._run_epoch(epoch, start_step if epoch == start_epoch else 0)
            if early_stopped:
                break
        return self._finish(early_stopped)

    def _run_epoch(self, epoch: int, first: int) -> bool:
        """Epoch index `epoch` (0-based) from batch `first`: train, validate, record,
        checkpoint. True when early stopping ends the run."""
        self.epoch = epoch
        self.step = first
        if first == 0:
            self._acc = self._new_acc()
        t0 = time.monotonic()
        self._epoch_data_wait = None
        images_before = self._acc["images"]
        self.run_callbacks("on_train_epoch_start")
        self.train_epoch(epoch, first)
        if self.device.type == "cuda":
            # Steps are queued asynchronously; wait for them so the epoch's throughput
            # counts finished work, not queued work.
            torch.cuda.synchronize(self.device)
        if self.stop_requested:
            self._stop(epoch, self.step)
        train_seconds = time.monotonic() - t0
        self.run_callbacks("on_train_epoch_end")
        metrics = self._run_validation()
        if metrics is None:
            self._stop(epoch, self.step)
        early_stopped = self._end_epoch(epoch, metrics, t0, train_seconds, self._acc["images"] - images_before)
        if self.stop_requested:
            self._stop(epoch + 1, 0, already_saved=self._last_saved_position == (epoch + 1, 0))
        return early_stopped

    def _emit_started(self, resumed_from: str | None) -> None:
        cfg = self.cfg
        self.events.emit(
            "started",
            total_epochs=cfg.epochs,
            start_epoch=self.epoch,
            start_step=self.step,
            device=describe_device(self.device),
            torch_version=torch.__version__,
            resumed_from=resumed_from,
            train_images=len(self.train_dataset),
            val_images=len(self.val_dataset),
            pid=os.getpid(),
            task=self.task,
            framework=cfg.framework,
            architecture=cfg.architecture,
            class_names=list(self.class_names),
            image_size=self.image_size,
            batch_size=cfg.batch_size,
            steps_per_epoch=self.steps_per_epoch,
            amp=self.amp_name,
            num_workers=self.num_workers,
        )

    def _run_validation(self) -> dict[str, float] | None:
        self.model.eval()
        self._val_interrupted = False
        self.run_callbacks("on_val_start")
        with torch.no_grad():
            metrics = self.validate()
        if self._val_interrupted:
            return None
        self.run_callbacks("on_val_end")
        return {k: float(v) for k, v in metrics.items() if v is not None}

    def _end_epoch(self, epoch: int, metrics: dict[str, float], t0: float, train_seconds: float, images: int) -> bool:
        """Record epoch `epoch`'s results, emit `epoch`, save the checkpoints it calls for.
        True when early stopping ends the run."""
        cfg = self.cfg
        train_loss, losses = self._epoch_losses(epoch)
        done = epoch + 1
        is_best = self._update_best(metrics.get(self.main_metric), done)
        record = {"epoch": done, "train_loss": train_loss, "losses": losses, "metrics": metrics}
        self.history.append(record)
        self.last_metrics = dict(metrics)
        for split in ("train", "val"):
            self.problems.report(split)
        self.events.emit(
            "epoch",
            epoch=done,
            total_epochs=cfg.epochs,
            train_loss=train_loss,
            losses=losses,
            metrics=metrics,
            lr=self.optimizer.param_groups[0]["lr"],
            seconds=time.monotonic() - t0,
            images_per_sec=images / max(1e-9, train_seconds),
            **_data_wait(self._epoch_data_wait, train_seconds),
            is_best=is_best,
        )
        self.run_callbacks("on_fit_epoch_end")
        early = bool(cfg.early_stopping_patience) and self.epochs_without_improvement >= cfg.early_stopping_patience
        kinds = self._epoch_checkpoint_kinds(done, is_best, early)
        if kinds:
            self.save_checkpoint(kinds, done, 0)
        return early

    def _epoch_losses(self, epoch: int) -> tuple[float, dict[str, float]]:
        """The epoch's mean loss and mean loss parts (one device sync)."""
        acc = self._acc
        steps = max(1, acc["steps"])
        train_loss = float(acc["loss"]) / steps
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss is {train_loss} after epoch {epoch + 1}")
        return train_loss, {k: float(v) / steps for k, v in acc["parts"].items()}

    def _update_best(self, value: float | None, done: int) -> bool:
        """Best-so-far and the early-stopping count; True when epoch `done` is the new best."""
        is_best = value is not None and (self.best_metric is None or value > self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = value, done
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return is_best

    def _epoch_checkpoint_kinds(self, done: int, is_best: bool, early: bool) -> list[str]:
        cfg = self.cfg
        kinds = []
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs or early or self.stop_requested:
            kinds.append("last")
        if is_best:
            kinds.append("best")
        if cfg.keep_periodic and done % cfg.checkpoint_every == 0:
            kinds.append("periodic")
        return kinds

    def _stop(self, epoch: int, step: int, already_saved: bool = False) -> None:
        """Checkpoint at (epochs done, step within the next epoch), emit `stopped`, unwind."""
        path = self.checkpoint_path("stop", epoch)
        if not already_saved:
            path = self.save_checkpoint(["stop"], epoch, step)["stop"]
        self.run_callbacks("on_stop")
        self.events.emit("stopped", reason=f"signal:{self.stop_requested}", epoch=epoch, step=step, checkpoint=path, resumable=True)
        raise _Stop()

    def _finish(self, early_stopped: bool) -> RunResult:
        """After the last epoch: the final checkpoint, metrics.json, weights, exports, `completed`."""
        cfg = self.cfg
        self.run_callbacks("on_train_end")
        os.makedirs(cfg.output_dir, exist_ok=True)
        last_path = self.checkpoint_path("last", cfg.epochs)
        if self._last_saved_position != (len(self.history), 0):
            # Every completed run leaves a resumable checkpoint of its final state.
            self.save_checkpoint(["last"], len(self.history), 0)
        self._artifact("checkpoint", last_path)
        self._artifact("metrics", self._write_metrics())
        self._artifact("weights", self._write_weights())
        for fmt in cfg.export:
            if self.stop_requested:
                # Training is done; a resumed run only repeats the exports.
                self._stop(len(self.history), 0, already_saved=True)
            self._run_export(fmt)
        self.events.emit(
            "completed",
            epochs=len(self.history),
            best_epoch=self.best_epoch,
            best_metric_name=self.main_metric,
            best_metric=self.best_metric,
            metrics=self.last_metrics,
            early_stopped=early_stopped,
        )
        return RunResult("completed", settings.EXIT_OK, dict(self.last_metrics))

    def _write_metrics(self) -> str:
        cfg = self.cfg
        metrics_path = os.path.join(cfg.output_dir, "metrics.json")
        with open(metrics_path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "task": self.task,
                    "framework": cfg.framework,
                    "architecture": cfg.architecture,
                    "class_names": self.class_names,
                    "main_metric": self.main_metric,
                    "best_epoch": self.best_epoch,
                    "best_metric": self.best_metric,
                    "final": self.last_metrics,
                    "details": self.val_details,
                    "history": self.history,
                    "corrupt_images": {k: sorted(v.values()) for k, v in self.problems.bad.items()},
                },
                fh,
                indent=1,
            )
        os.replace(metrics_path + ".tmp", metrics_path)
        return metrics_path

    def _run_export(self, fmt: str) -> None:
        """One export with its hooks; a failed export is a warning, not a failed run."""
        self.run_callbacks("on_export_start")
        out = os.path.join(self.cfg.output_dir, "export", f"model.{fmt}")
        try:
            extra = self.export_model(fmt, out)
        except Exception as exc:
            traceback.print_exc()
            self._warn("export_failed", f"{fmt} export failed: {type(exc).__name__}: {exc}")
        else:
            self._artifact(fmt, out, **extra)
        self.run_callbacks("on_export_end")

    def _write_weights(self) -> str:
        """weights/best.pt: the best epoch's model only (what export and inference use)."""
        best = self.checkpoint_path("best", 0)
        state = self.inference_state(compat.load(best) if os.path.isfile(best) else None)
        compat.unwrap_model(self.model).load_state_dict(state)
        path = os.path.join(self.cfg.output_dir, "weights", "best.pt")
        atomic_save(self.weights_state(state), path)
        return path

    def weights_state(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return checkpointing.weights(self, state)

    def _artifact(self, kind: str, path: str, **extra: Any) -> None:
        size, digest = file_digest(path)
        self.events.emit("artifact", kind=kind, path=os.path.abspath(path), size_bytes=size, sha256=digest, **extra)

    # ------------------------------------------------------------ export entry point

    def load_for_export(self, state: dict[str, Any]) -> None:
        """Rebuild the model from a checkpoint or weights file (no dataset needed)."""
        self.class_names = list(state["class_names"])
        self.image_size = state["image_size"]
        self.device = torch.device("cpu")
        self.model = self.create_model()
        self.model.load_state_dict(state["model"])
        self.model.eval()

