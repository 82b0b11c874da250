"""run.json: the universal TrainingConfig, its validation and its JSON Schema.

The field table below is the single source of truth: the validator interprets the same
JSON Schema fragments that `schema/run-config.schema.json` is generated from (a test
checks the committed file matches), so the Python side and the API's job payload cannot
drift apart. Validation never imports torch: a bad run.json fails in milliseconds.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

TASKS = ("object-detection", "classification")
BUILTIN_FRAMEWORKS = ("torchvision", "ultralytics", "transformers")
FORMATS = ("yolo", "coco", "image_folder")
# Which dataset formats each task can read.
TASK_FORMATS = {"object-detection": ("yolo", "coco"), "classification": ("image_folder",)}

_DATASET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where the dataset lies on the trainer's disk (already extracted) and its layout.",
    "properties": {
        "path": {"type": "string", "minLength": 1, "description": "Dataset root folder on local disk."},
        "format": {
            "enum": list(FORMATS),
            "description": "yolo: data.yaml with names, images/<split>/, labels/<split>/. "
            "coco: annotations/instances_<split>.json plus images (file_name resolved under images/<split>/, "
            "<split>/, images/ or the root). image_folder: <split>/<class>/<image> (classification).",
        },
        "train_split": {"type": "string", "minLength": 1, "default": "train", "description": "Split used for training."},
        "val_split": {"type": "string", "minLength": 1, "default": "val", "description": "Split used for validation metrics."},
    },
    "required": ["path", "format"],
    "additionalProperties": False,
}

# name -> JSON Schema fragment (with "default" where optional). Order is the documentation order.
FIELDS: dict[str, dict[str, Any]] = {
    "task": {"enum": list(TASKS), "description": "Problem type."},
    "framework": {
        "type": "string",
        "minLength": 1,
        "default": "torchvision",
        "description": "torchvision, cvtrain (cvdet_n/s/m, the package's own YOLO-style detector), ultralytics "
        "(YOLO v8-11, needs the ultralytics package), transformers "
        "(RT-DETR, needs the transformers package), the name of a custom trainer registered under the "
        "'cvtrain.trainers' entry-point group, or an import path 'package.module:TrainerClass' of a BaseTrainer subclass.",
    },
    "architecture": {
        "type": "string",
        "minLength": 1,
        "description": "Model the framework understands: a torchvision builder name (e.g. ssdlite320_mobilenet_v3_large, "
        "resnet18), cvdet_n/cvdet_s/cvdet_m for cvtrain, an ultralytics model yaml (e.g. yolov8n), or "
        "rtdetr_r18vd/rtdetr_r50vd for transformers.",
    },
    "dataset": _DATASET_SCHEMA,
    "output_dir": {"type": "string", "minLength": 1, "description": "Folder for checkpoints, weights, exports and metrics.json; created if missing."},
    "epochs": {"type": "integer", "minimum": 1, "default": 10, "description": "Number of training epochs."},
    "batch_size": {"type": "integer", "minimum": 1, "default": 8, "description": "Images per training step."},
    "image_size": {
        "type": ["integer", "null"],
        "minimum": 32,
        "default": None,
        "description": "Square model input side in pixels (images are letterboxed for detection, resized for "
        "classification). null: the architecture's native size (320 for ssdlite320/*_320_fpn, 640 for other "
        "detectors, 224 for classifiers).",
    },
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.01, "description": "Peak learning rate (after warm-up)."},
    "optimizer": {"enum": ["sgd", "adam", "adamw"], "default": "sgd", "description": "Optimizer; SGD uses momentum 0.9."},
    "weight_decay": {"type": "number", "minimum": 0, "default": 0.0001, "description": "Weight decay (not applied to biases and normalisation weights)."},
    "warmup_epochs": {"type": "number", "minimum": 0, "default": 1.0, "description": "Linear LR warm-up length in epochs (fractions allowed)."},
    "lr_schedule": {"enum": ["cosine", "constant"], "default": "cosine", "description": "LR schedule after warm-up, stepped every batch."},
    "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "Seed of model init, sample order and augmentation."},
    "device": {
        "type": "string",
        "pattern": "^(auto|cpu|cuda|cuda:[0-9]+)$",
        "default": "auto",
        "description": "auto (cuda:0 when available, else cpu), cpu, cuda, or cuda:N.",
    },
    "amp": {
        "enum": ["auto", "off", "bf16", "fp16", True, False],
        "default": "auto",
        "description": "Mixed precision. auto: bf16 on GPUs that support it, else fp16 with a grad scaler, off on CPU. "
        "true means auto, false means off.",
    },
    "num_workers": {
        "anyOf": [{"type": "integer", "minimum": 0}, {"const": "auto"}],
        "default": "auto",
        "description": "DataLoader worker processes decoding images; auto: min(CPU count, 12). Results do not depend on it.",
    },
    "checkpoint_every": {
        "type": "integer",
        "minimum": 1,
        "default": 1,
        "description": "Write checkpoints/last.pt every N epochs (and always after the last epoch and on SIGTERM).",
    },
    "keep_periodic": {
        "type": "boolean",
        "default": False,
        "description": "Also keep checkpoints/epoch_NNNN.pt at every checkpoint_every boundary (kind 'periodic').",
    },
    "early_stopping_patience": {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
        "description": "Stop after this many epochs without improvement of the main metric; null disables.",
    },
    "resume_from": {
        "type": ["string", "null"],
        "minLength": 1,
        "default": None,
        "description": "Checkpoint to resume from (any kind, mid-epoch included), or 'last' for "
        "<output_dir>/checkpoints/last.pt when it exists (fresh start otherwise); null starts fresh.",
    },
    "pretrained_weights": {
        "type": ["string", "null"],
        "minLength": 1,
        "default": None,
        "description": "Local .pt/.pth state dict or cvtrain checkpoint to initialise from (tensors whose shape "
        "differs, e.g. the class head, are skipped). Nothing is ever downloaded.",
    },
    "export": {
        "type": "array",
        "items": {"enum": ["onnx"]},
        "uniqueItems": True,
        "default": ["onnx"],
        "description": "Formats exported from the best weights after training; [] exports nothing.",
    },
    "session_id": {"type": "string", "minLength": 1, "default": "local", "description": "Copied into every event's `session`."},
    "progress_interval_s": {"type": "number", "minimum": 0, "default": 1.0, "description": "Minimum seconds between `progress` events."},
    "max_batches_per_epoch": {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
        "description": "Cap on training batches per epoch (smoke tests, benchmarks); null: the whole split.",
    },
    "max_val_batches": {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
        "description": "Cap on validation batches per epoch; null: the whole split.",
    },
    "augment": {"type": "boolean", "default": True, "description": "Flip, scale jitter and colour jitter on training images."},
    "clip_grad_norm": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "default": 10.0,
        "description": "Clip the global gradient norm to this value; null disables.",
    },
    "channels_last": {
        "enum": ["auto", True, False],
        "default": "auto",
        "description": "channels-last memory format; auto: on for classifiers on CUDA with mixed precision, off otherwise "
        "(torchvision detectors re-batch their inputs in NCHW, so detection gains little).",
    },
    "compile": {"type": "boolean", "default": False, "description": "Wrap the model in torch.compile (torch >= 2.0; ignored with a warning otherwise)."},
    "max_corrupt_fraction": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "default": 0.05,
        "description": "Fail the run (exit 3) when more than this fraction of a split's samples are corrupt; "
        "below it they are skipped and counted in `warning` events.",
    },
}
REQUIRED = ("task", "architecture", "dataset", "output_dir")


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema of run.json, as committed to schema/run-config.schema.json."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:cvtrain:schema:run-config:v1",
        "title": "cvtrain run.json (trainer run configuration)",
        "description": "Configuration of one training run: `python3 -m cvtrain train --config run.json`. "
        "The API's job payload embeds it. Unknown keys are refused; a bad value fails before any work "
        "with exit code 2 and a message naming the key.",
        "type": "object",
        "properties": copy.deepcopy(FIELDS),
        "required": list(REQUIRED),
        "additionalProperties": False,
    }


# --------------------------------------------------------------------------------------------
# A small interpreter of the JSON Schema keywords used above, so that the trainer (which
# must not depend on the jsonschema package at run time) applies exactly the committed schema.


def _type_ok(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    raise AssertionError(t)


def _check(value: Any, schema: dict[str, Any], key: str) -> None:
    def fail(problem: str) -> None:
        raise ConfigError(key, f"{problem} (got {json.dumps(value)})")

    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                _check(value, option, key)
                return
            except ConfigError:
                continue
        fail("must be " + " or ".join(_describe(o) for o in schema["anyOf"]))
    if "const" in schema and value != schema["const"]:
        fail(f"must be {json.dumps(schema['const'])}")
    if "enum" in schema:
        # bool == int in Python; compare with types so `1` is not accepted for `true`.
        if not any(type(value) is type(e) and value == e for e in schema["enum"]):
            fail("must be one of " + ", ".join(json.dumps(e) for e in schema["enum"]))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            fail("must be " + " or ".join(types))
    if value is None:
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            fail(f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            fail(f"must be <= {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            fail(f"must be > {schema['exclusiveMinimum']}")
        if isinstance(value, float) and value != value:
            fail("must be a finite number")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            fail("must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            fail(f"must match {schema['pattern']}")
    if isinstance(value, list):
        if schema.get("uniqueItems") and len({json.dumps(v) for v in value}) != len(value):
            fail("must not repeat items")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{key}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise ConfigError(f"{key}.{name}", "is required")
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in props:
                    raise ConfigError(f"{key}.{name}", "is not a known key; known: " + ", ".join(props))
        for name, sub in props.items():
            if name in value:
                _check(value[name], sub, f"{key}.{name}")


def _describe(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return json.dumps(schema["const"])
    t = schema.get("type", "value")
    if "minimum" in schema:
        return f"{t} >= {schema['minimum']}"
    return str(t)


# --------------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    path: str
    format: str
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class TrainingConfig:
    """The validated run.json. Field meanings: FIELDS above (and the generated schema)."""

    task: str
    architecture: str
    dataset: DatasetConfig
    output_dir: str
    framework: str = "torchvision"
    epochs: int = 10
    batch_size: int = 8
    image_size: int | None = None
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 0.0001
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    amp: Any = "auto"
    num_workers: Any = "auto"
    checkpoint_every: int = 1
    keep_periodic: bool = False
    early_stopping_patience: int | None = None
    resume_from: str | None = None
    pretrained_weights: str | None = None
    export: list = field(default_factory=lambda: ["onnx"])
    session_id: str = "local"
    progress_interval_s: float = 1.0
    max_batches_per_epoch: int | None = None
    max_val_batches: int | None = None
    augment: bool = True
    clip_grad_norm: float | None = 10.0
    channels_last: Any = "auto"
    compile: bool = False
    max_corrupt_fraction: float = 0.05

    @classmethod
    def from_dict(cls, raw: Any, *, check_paths: bool = True) -> "TrainingConfig":
        """Validate `raw` (parsed run.json) against the schema, then against the machine."""
        if not isinstance(raw, dict):
            raise ConfigError("(root)", "run.json must hold a JSON object")
        for name in raw:
            if name not in FIELDS:
                raise ConfigError(name, "is not a known key; known: " + ", ".join(FIELDS))
        for name in REQUIRED:
            if name not in raw:
                raise ConfigError(name, "is required")
        for name, schema in FIELDS.items():
            if name in raw:
                _check(raw[name], schema, name)
        values = {name: copy.deepcopy(raw.get(name, schema.get("default"))) for name, schema in FIELDS.items()}
        ds = values.pop("dataset")
        ds_defaults = {k: v["default"] for k, v in _DATASET_SCHEMA["properties"].items() if "default" in v}
        cfg = cls(dataset=DatasetConfig(**{**ds_defaults, **ds}), **values)
        cfg._normalise()
        cfg._check_semantics(check_paths)
        return cfg

    @classmethod
    def from_file(cls, path: str) -> "TrainingConfig":
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    def _normalise(self) -> None:
        if self.amp is True:
            self.amp = "auto"
        elif self.amp is False:
            self.amp = "off"
        self.output_dir = os.path.abspath(self.output_dir)
        self.dataset.path = os.path.abspath(self.dataset.path)
        for name in ("pretrained_weights",):
            if getattr(self, name):
                setattr(self, name, os.path.abspath(getattr(self, name)))
        if self.resume_from and self.resume_from != "last":
            self.resume_from = os.path.abspath(self.resume_from)

    def _check_semantics(self, check_paths: bool) -> None:
        allowed = TASK_FORMATS[self.task]
        if self.dataset.format not in allowed:
            raise ConfigError(
                "dataset.format", f"{self.task} reads {' or '.join(allowed)} datasets, not {self.dataset.format}"
            )
        if self.dataset.train_split == self.dataset.val_split:
            raise ConfigError("dataset.val_split", "must differ from dataset.train_split")
        if not check_paths:
            return
        if not os.path.isdir(self.dataset.path):
            raise ConfigError("dataset.path", f"is not a directory: {self.dataset.path}")
        if self.pretrained_weights and not os.path.isfile(self.pretrained_weights):
            raise ConfigError("pretrained_weights", f"file not found: {self.pretrained_weights}")
        if self.resume_from and self.resume_from != "last" and not os.path.isfile(self.resume_from):
            raise ConfigError("resume_from", f"file not found: {self.resume_from}")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ConfigError("output_dir", f"exists and is not a directory: {self.output_dir}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(vars(v)) if isinstance(v, DatasetConfig) else copy.deepcopy(v)
        return out

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.output_dir, "checkpoints")
