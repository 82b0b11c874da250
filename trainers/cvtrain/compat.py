"""Guards around torch APIs that moved between torch 1.13 (Debian, CPU) and 2.x (CUDA).

Everything version-specific lives here so the trainer code reads the same on both.
"""

from __future__ import annotations

import inspect
import random
from typing import Any

import numpy as np
import torch


def torch_version_tuple() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# torch's restricted unpickler only handles every opcode of ordinary state dicts (floats,
# for one) from 2.4 on; 1.13 has the flag but rejects a float.
SAFE_LOAD_FROM = (2, 4)


def load(path: str, map_location: Any = "cpu") -> Any:
    """torch.load restricted to tensors and plain containers where torch can do that.

    Checkpoints hold only such types (RNG states are stored as lists; a test checks the
    pickle's globals), so the restricted loader reads them on torch >= 2.4, where it is
    also the default. On older torch (Debian's 1.13) this is a plain torch.load: load
    pretrained_weights files only from sources you trust there.
    """
    if torch_version_tuple() >= SAFE_LOAD_FROM and _accepts(torch.load, "weights_only"):
        return torch.load(path, map_location=map_location, weights_only=True)
    return torch.load(path, map_location=map_location)


def autocast(device_type: str, dtype: torch.dtype | None, enabled: bool) -> Any:
    # torch.autocast exists since 1.10 for both cpu and cuda; torch.cuda.amp.autocast is
    # deprecated in 2.x, so never use it.
    if not enabled or dtype is None:
        return torch.autocast(device_type=device_type, enabled=False)
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=True)


def grad_scaler(enabled: bool) -> Any:
    """fp16 loss scaler: torch.amp.GradScaler('cuda') on 2.3+, torch.cuda.amp before."""
    amp_mod = getattr(torch, "amp", None)
    if amp_mod is not None and hasattr(amp_mod, "GradScaler"):
        return amp_mod.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def can_compile() -> bool:
    return hasattr(torch, "compile")


def configure_cuda_backend() -> None:
    """Speed settings for CUDA: cuDNN autotuning (input sizes are fixed by letterboxing)
    and TF32 for whatever still runs in float32."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def page_lock(tensor: torch.Tensor) -> bool:
    """Page-lock a CPU tensor's existing memory (cudaHostRegister) so copies from it to the
    device are asynchronous DMA, as from pin_memory(); True when it is now pinned. Used for
    memory that must stay where it is (shared with DataLoader workers), which pin_memory()
    would copy instead."""
    try:
        cudart = torch.cuda.cudart()
        err = cudart.cudaHostRegister(tensor.data_ptr(), tensor.numel() * tensor.element_size(), 0)
    except Exception:
        return False
    if int(err) != 0:
        return False
    if tensor.is_pinned():
        return True
    cudart.cudaHostUnregister(tensor.data_ptr())
    return False


def page_unlock(tensor: torch.Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(tensor.data_ptr())


def onnx_export_kwargs() -> dict[str, Any]:
    """torch >= 2.9 defaults torch.onnx.export to the dynamo exporter, which needs
    onnxscript and cannot trace torchvision's detection post-processing the same way;
    the TorchScript exporter is what every version has."""
    if _accepts(torch.onnx.export, "dynamo"):
        return {"dynamo": False}
    return {}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper (its state_dict keys have a prefix)."""
    return getattr(model, "_orig_mod", model)


# --- RNG state, in forms torch.load(weights_only=True) accepts --------------------------------


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            torch.cuda.set_rng_state(cuda_states[0])


def _to_lists(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_to_lists(x) for x in obj]
    return obj


def _to_tuples(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_to_tuples(x) for x in obj)
    return obj


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
