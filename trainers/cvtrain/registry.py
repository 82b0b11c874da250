"""Which trainer class runs a config: built-in families, entry points, import paths.

Custom trainers register either
  * as an entry point in the group `cvtrain.trainers` of an installed distribution
    (`[project.entry-points."cvtrain.trainers"] mytrainer = "mypkg.train:MyTrainer"`),
    then run with `"framework": "mytrainer"`; or
  * by import path, `"framework": "mypkg.train:MyTrainer"` (the module must be importable,
    e.g. on PYTHONPATH).
The class must subclass cvtrain.trainer.BaseTrainer (usually DetectionTrainer or
ClassificationTrainer, overriding create_model).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import sys
from typing import Any

from .config import TrainingConfig
from .errors import ConfigError, FrameworkUnavailable

ENTRY_POINT_GROUP = "cvtrain.trainers"
# framework -> (python package it needs, task -> "module:Class")
BUILTIN: dict[str, tuple[str, dict[str, str]]] = {
    "torchvision": (
        "torchvision",
        {
            "object-detection": "cvtrain.tasks.detection:TorchvisionDetectionTrainer",
            "classification": "cvtrain.tasks.classification:TorchvisionClassificationTrainer",
        },
    ),
    # The package's own YOLO-style detector (families/cvdet); needs only torch and torchvision.
    "cvtrain": ("torchvision", {"object-detection": "cvtrain.families.cvdet:CvdetTrainer"}),
    "ultralytics": ("ultralytics", {"object-detection": "cvtrain.families.ultralytics_yolo:YoloTrainer"}),
    "transformers": ("transformers", {"object-detection": "cvtrain.families.transformers_rtdetr:RTDetrTrainer"}),
}


def _entry_points() -> dict[str, Any]:
    eps = md.entry_points()
    selected = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in selected}


def _version(package: str) -> str | None:
    if importlib.util.find_spec(package) is None:
        return None
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        module = importlib.import_module(package)
        return str(getattr(module, "__version__", "unknown version"))


def installed_frameworks() -> list[str]:
    """Human-readable list for error messages: what this Python can train with."""
    out = []
    for name, (package, tasks) in BUILTIN.items():
        version = _version(package)
        state = f"{package} {version}" if version else f"not installed (needs the '{package}' package)"
        out.append(f"{name}: {state}; tasks: {', '.join(tasks)}")
    customs = sorted(_entry_points())
    out.append(f"custom entry points ({ENTRY_POINT_GROUP}): {', '.join(customs) if customs else 'none'}")
    return out


def _load(spec: str, key_for_errors: str) -> type:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FrameworkUnavailable(f"cannot import {module_name} for framework {key_for_errors!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError("framework", f"{module_name} has no attribute {attr!r}")
    return obj


def resolve_trainer(cfg: TrainingConfig) -> type:
    """The trainer class for `cfg`, after checking it can run here. Raises ConfigError or
    FrameworkUnavailable before any work."""
    from .trainer import BaseTrainer

    fw = cfg.framework
    if fw in BUILTIN:
        package, tasks = BUILTIN[fw]
        if cfg.task not in tasks:
            raise ConfigError("task", f"framework {fw} supports {', '.join(tasks)}, not {cfg.task}")
        if importlib.util.find_spec(package) is None:
            raise FrameworkUnavailable(
                f"framework '{fw}' needs the Python package '{package}', which is not importable in "
                f"{sys.executable} (Python {sys.version.split()[0]}). Installed here:\n  "
                + "\n  ".join(installed_frameworks())
            )
        cls = _load(tasks[cfg.task], fw)
    elif ":" in fw:
        cls = _load(fw, fw)
    else:
        eps = _entry_points()
        if fw not in eps:
            raise ConfigError(
                "framework",
                f"unknown framework {fw!r}: use one of {', '.join(BUILTIN)}, a custom trainer registered in the "
                f"'{ENTRY_POINT_GROUP}' entry-point group, or an import path 'package.module:Class'. Installed here: "
                + "; ".join(installed_frameworks()),
            )
        try:
            cls = eps[fw].load()
        except ImportError as exc:
            raise FrameworkUnavailable(f"custom trainer {fw!r} ({eps[fw].value}) cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseTrainer)):
        raise ConfigError("framework", f"{fw} does not name a subclass of cvtrain.trainer.BaseTrainer")
    if cls.task and cls.task != cfg.task:
        raise ConfigError("task", f"{cls.__name__} trains {cls.task}, not {cfg.task}")
    cls.check_config(cfg)
    return cls
