"""Puts trainers/ on sys.path: the package runs from source, without an install step."""

import sys
from pathlib import Path

_TRAINERS = str(Path(__file__).resolve().parents[1])
if _TRAINERS not in sys.path:
    sys.path.insert(0, _TRAINERS)


# --- shared helpers of the trainer tests (datasets, configs, events, CLI) -------------------

import json
import os
import subprocess

import pytest

REPO = Path(__file__).resolve().parents[2]
EVENTS_SCHEMA = REPO / "schema" / "trainer-events.schema.json"
RUN_CONFIG_SCHEMA = REPO / "schema" / "run-config.schema.json"


@pytest.fixture(scope="session")
def events_validator():
    import jsonschema

    schema = json.loads(EVENTS_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="session")
def check_events(events_validator):
    """Validates every event against the protocol schema; returns the events."""

    def check(events):
        assert events, "no events were emitted"
        for event in events:
            errors = [e.message for e in events_validator.iter_errors(event)]
            assert not errors, f"{event['type']} event violates the schema: {errors}: {event}"
        return events

    return check


def read_events(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def cli(*args, timeout=300, env=None, **popen):
    """Runs `python3 -m cvtrain ARGS` the way the gpu-node does (trainers/ on PYTHONPATH)."""
    env = dict(env or os.environ, PYTHONUNBUFFERED="1")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _TRAINERS not in paths:
        env["PYTHONPATH"] = os.pathsep.join([_TRAINERS, *paths])
    return subprocess.run(
        [sys.executable, "-m", "cvtrain", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, **popen
    )


def cli_popen(*args, **popen):
    env = dict(os.environ, PYTHONPATH=_TRAINERS, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "cvtrain", *map(str, args)], env=env, **popen)


def write_config(path, **cfg):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh)
    return path


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """Small generated datasets, one per format, made once per test session."""
    from cvtrain.datasets.shapes import make_shapes

    root = tmp_path_factory.mktemp("datasets")
    out = {}
    for name, fmt, n, size in (
        ("yolo", "yolo", 40, 96),
        ("coco", "coco", 40, 96),
        ("folder", "image_folder", 96, 64),
    ):
        make_shapes(str(root / name), fmt, n, seed=7, size=size)
        out[name] = str(root / name)
    return out
