"""Which device a run trains on, and in which autocast precision.

`device` and `amp` of run.json resolve here; the CLI calls `resolve_device` before building a
trainer, so a run asking for a GPU the machine lacks fails as a config error naming the key.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import compat
from .errors import ConfigError

#: warn(code, message): how a precision fallback is reported (a `warning` event).
Warn = Callable[[str, str], None]


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device", f"{spec} requested but CUDA is not available (torch {torch.__version__})")
    dev = torch.device("cuda:0" if spec == "cuda" else spec)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError("device", f"{spec} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def amp_dtype(device: torch.device, amp: str, warn: Warn) -> torch.dtype | None:
    """The autocast dtype for run.json's `amp` on `device` (None: float32). What the device
    cannot do falls back with a warning rather than failing the run."""
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if compat.bf16_supported() else torch.float16
        if amp == "bf16":
            if compat.bf16_supported():
                return torch.bfloat16
            warn("amp_fallback", "bf16 is not supported on this GPU; using fp16 with a grad scaler")
            return torch.float16
        if amp == "fp16":
            return torch.float16
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        warn("amp_unsupported", "fp16 autocast needs CUDA; training in float32 on CPU")
    return None
