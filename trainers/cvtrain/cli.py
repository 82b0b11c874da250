"""python3 -m cvtrain {train, evaluate, export, make-dataset, validate-dataset, schema}.

Exit codes (settings.py): 0 completed or stopped at a checkpoint, 1 failed, 2 bad
config or arguments (nothing done), 3 dataset error, 4 framework not importable,
5 loss diverged.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import traceback
from typing import Sequence

from . import settings
from .config import FIELDS, FORMATS, TrainingConfig, run_config_schema
from .errors import ConfigError, CvtrainError, DatasetError
from .events import EventEmitter


def _events_target(value: str | None) -> str | None:
    if value and value.startswith("fd:"):
        try:
            fd = int(value[3:])
            os.fstat(fd)
        except (ValueError, OSError):
            raise ConfigError("--events", f"{value} is not an open file descriptor") from None
    return value


def _emit_failed(emitter: EventEmitter, exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    emitter.emit(
        "failed",
        message=str(exc),
        error_type=type(exc).__name__,
        traceback_tail="\n".join(tb[-settings.TRACEBACK_TAIL_LINES :]),
        exit_code=getattr(exc, "exit_code", settings.EXIT_FAILED),
    )


def _raw_session(path: str) -> str:
    """session_id from a run.json that failed validation, so its `failed` event still
    reaches the right session."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh).get("session_id")
        return value if isinstance(value, str) and value else "local"
    except Exception:
        return "local"


def cmd_train(args: argparse.Namespace) -> int:
    from .stopping import install_early_handlers

    install_early_handlers()
    try:
        target = _events_target(args.events)
    except ConfigError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        cfg = TrainingConfig.from_file(args.config)
    except ConfigError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        if target:
            emitter = EventEmitter(target, _raw_session(args.config))
            _emit_failed(emitter, exc)
            emitter.close()
        return exc.exit_code
    emitter = EventEmitter(target or os.path.join(cfg.output_dir, "events.jsonl"), cfg.session_id)
    try:
        from .registry import resolve_trainer
        from .devices import resolve_device

        trainer_cls = resolve_trainer(cfg)
        resolve_device(cfg.device)
    except CvtrainError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        _emit_failed(emitter, exc)
        emitter.close()
        return exc.exit_code
    trainer = trainer_cls(cfg, emitter)
    result = trainer.fit()
    emitter.close()
    return result.exit_code


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate_files

    try:
        stats = evaluate_files(args.gt, args.dt)
    except FileNotFoundError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        return settings.EXIT_CONFIG
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cvtrain: cannot evaluate {args.dt} against {args.gt}: {exc}", file=sys.stderr)
        return settings.EXIT_DATASET
    text = json.dumps(stats, indent=None if args.compact else 1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return settings.EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from . import compat
    from .registry import resolve_trainer
    from .checkpointing import CHECKPOINT_FORMAT, WEIGHTS_FORMAT, file_digest

    try:
        state = compat.load(args.checkpoint)
    except FileNotFoundError:
        print(f"cvtrain: config key '--checkpoint': file not found: {args.checkpoint}", file=sys.stderr)
        return settings.EXIT_CONFIG
    except Exception as exc:
        print(f"cvtrain: config key '--checkpoint': cannot read {args.checkpoint}: {exc}", file=sys.stderr)
        return settings.EXIT_CONFIG
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        print(f"cvtrain: config key '--checkpoint': {args.checkpoint} is not a cvtrain checkpoint or weights file", file=sys.stderr)
        return settings.EXIT_CONFIG
    emitter = EventEmitter(_events_target(args.events), state["config"].get("session_id", "local"))
    try:
        cfg = TrainingConfig.from_dict(state["config"], check_paths=False)
        trainer = resolve_trainer(cfg)(cfg, emitter)
        trainer.load_for_export(state)
        extra = trainer.export_model(args.format, args.out)
    except CvtrainError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        _emit_failed(emitter, exc)
        return exc.exit_code
    size, digest = file_digest(args.out)
    event = emitter.emit("artifact", kind=args.format, path=os.path.abspath(args.out), size_bytes=size, sha256=digest, **extra)
    print(json.dumps(event))
    return settings.EXIT_OK


def cmd_make_dataset(args: argparse.Namespace) -> int:
    from .datasets.shapes import make_shapes

    if args.images < 2:
        print("cvtrain: config key '--images': needs at least 2 (one per split)", file=sys.stderr)
        return settings.EXIT_CONFIG
    summary = make_shapes(args.out, args.format, args.images, args.seed, args.size, args.val_fraction, args.workers)
    print(json.dumps(summary))
    return settings.EXIT_OK


def cmd_validate_dataset(args: argparse.Namespace) -> int:
    from .datasets.validate import validate_dataset

    try:
        report = validate_dataset(args.dir, args.format, check_images=not args.skip_images)
    except DatasetError as exc:
        print(f"cvtrain: {exc}", file=sys.stderr)
        return settings.EXIT_DATASET
    print(json.dumps(report, indent=1))
    return settings.EXIT_OK if report["valid"] else settings.EXIT_DATASET


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(run_config_schema(), indent=2))
    return settings.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m cvtrain", description="cvtrain trainers")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a run.json")
    t.add_argument("--config", required=True, help="run.json (keys: " + ", ".join(FIELDS) + ")")
    t.add_argument("--events", help="event sink: a file path (appended) or fd:N; default <output_dir>/events.jsonl")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="COCO bbox evaluation of a detections file")
    e.add_argument("--gt", required=True, help="COCO ground-truth json")
    e.add_argument("--dt", required=True, help="COCO results json (list of {image_id, category_id, bbox, score})")
    e.add_argument("--out", help="also write the JSON here")
    e.add_argument("--compact", action="store_true", help="one-line JSON")
    e.set_defaults(fn=cmd_evaluate)

    x = sub.add_parser("export", help="export a checkpoint or weights file")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.add_argument("--out", required=True)
    x.add_argument("--events", help="also write the artifact event to this sink")
    x.set_defaults(fn=cmd_export)

    m = sub.add_parser("make-dataset", help="generate a synthetic dataset")
    m.add_argument("kind", choices=["shapes"])
    m.add_argument("--out", required=True)
    m.add_argument("--format", choices=FORMATS, required=True)
    m.add_argument("--images", type=int, required=True, help="total images over train and val")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--size", type=int, default=160, help="image side in pixels")
    m.add_argument("--val-fraction", type=float, default=0.25)
    m.add_argument("--workers", type=int, default=1, help="processes rendering images")
    m.set_defaults(fn=cmd_make_dataset)

    v = sub.add_parser("validate-dataset", help="list every problem of a dataset (exit 3 when there are any)")
    v.add_argument("dir")
    v.add_argument("--format", choices=FORMATS, required=True)
    v.add_argument("--skip-images", action="store_true", help="do not decode images")
    v.set_defaults(fn=cmd_validate_dataset)

    s = sub.add_parser("schema", help="print the JSON Schema of run.json")
    s.set_defaults(fn=cmd_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a stuck run is diagnosed on
    # a node (the gpu-node forwards stderr to the session's logs).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser().parse_args(argv)
    return int(args.fn(args))
