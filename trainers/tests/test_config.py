"""run.json validation: every bad key fails before any work, naming the key (exit 2)."""

import json

import jsonschema
import pytest
from conftest import RUN_CONFIG_SCHEMA, cli, read_events, write_config

from cvtrain.config import FIELDS, TrainingConfig, run_config_schema
from cvtrain.errors import ConfigError, FrameworkUnavailable
from cvtrain.registry import resolve_trainer


def base(datasets, tmp_path, **over):
    cfg = {
        "task": "object-detection",
        "architecture": "ssdlite320_mobilenet_v3_large",
        "dataset": {"path": datasets["yolo"], "format": "yolo"},
        "output_dir": str(tmp_path / "out"),
    }
    cfg.update(over)
    return cfg


def test_committed_schema_is_generated_from_the_field_table():
    committed = json.loads(RUN_CONFIG_SCHEMA.read_text())
    assert committed == run_config_schema(), "schema/run-config.schema.json is stale: regenerate with `python3 -m cvtrain schema`"
    jsonschema.Draft202012Validator.check_schema(committed)
    for name, spec in committed["properties"].items():
        assert spec.get("description"), f"{name} has no description"


def test_defaults_fill_in_and_validate_against_schema(datasets, tmp_path):
    cfg = TrainingConfig.from_dict(base(datasets, tmp_path))
    assert cfg.framework == "torchvision" and cfg.export == ["onnx"] and cfg.session_id == "local"
    assert cfg.progress_interval_s == 1.0 and cfg.amp == "auto" and cfg.dataset.val_split == "val"
    # The defaults themselves satisfy the published schema.
    jsonschema.validate(cfg.to_dict(), run_config_schema())
    assert set(cfg.to_dict()) == set(FIELDS)


BAD_VALUES = [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch_size": True}, "batch_size"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"device": "tpu"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"amp": "int8"}, "amp"),
    ({"num_workers": -1}, "num_workers"),
    ({"num_workers": "many"}, "num_workers"),
    ({"image_size": 16}, "image_size"),
    ({"export": ["tflite"]}, "export[0]"),
    ({"export": ["onnx", "onnx"]}, "export"),
    ({"task": "segmentation"}, "task"),
    ({"max_corrupt_fraction": 1.5}, "max_corrupt_fraction"),
    ({"session_id": ""}, "session_id"),
    ({"dataset": {"path": "/x"}}, "dataset.format"),
    ({"dataset": {"path": "/x", "format": "voc"}}, "dataset.format"),
    ({"dataset": {"path": "/x", "format": "yolo", "split": "a"}}, "dataset.split"),
    ({"learning_rat": 0.1}, "learning_rat"),
]


@pytest.mark.parametrize("over,key", BAD_VALUES)
def test_bad_values_name_the_key(datasets, tmp_path, over, key):
    raw = base(datasets, tmp_path, **over)
    with pytest.raises(ConfigError) as info:
        TrainingConfig.from_dict(raw)
    assert info.value.key == key
    assert f"'{key}'" in str(info.value)
    # The published schema rejects the same document (the Python side interprets it).
    assert not jsonschema.Draft202012Validator(run_config_schema()).is_valid(raw)


@pytest.mark.parametrize("missing", ["task", "architecture", "dataset", "output_dir"])
def test_required_keys(datasets, tmp_path, missing):
    raw = base(datasets, tmp_path)
    del raw[missing]
    with pytest.raises(ConfigError) as info:
        TrainingConfig.from_dict(raw)
    assert info.value.key == missing and "required" in str(info.value)


def test_semantic_checks(datasets, tmp_path):
    with pytest.raises(ConfigError, match="dataset.format"):
        TrainingConfig.from_dict(base(datasets, tmp_path, dataset={"path": datasets["folder"], "format": "image_folder"}))
    with pytest.raises(ConfigError, match="'dataset.path'"):
        TrainingConfig.from_dict(base(datasets, tmp_path, dataset={"path": str(tmp_path / "nope"), "format": "yolo"}))
    with pytest.raises(ConfigError, match="'pretrained_weights'"):
        TrainingConfig.from_dict(base(datasets, tmp_path, pretrained_weights=str(tmp_path / "none.pt")))
    with pytest.raises(ConfigError, match="'resume_from'"):
        TrainingConfig.from_dict(base(datasets, tmp_path, resume_from=str(tmp_path / "none.pt")))
    # "last" is allowed before any checkpoint exists (a fresh start).
    assert TrainingConfig.from_dict(base(datasets, tmp_path, resume_from="last")).resume_from == "last"


def test_trainer_resolution_checks(datasets, tmp_path):
    with pytest.raises(ConfigError, match="'architecture'.*ssdlite320"):
        resolve_trainer(TrainingConfig.from_dict(base(datasets, tmp_path, architecture="resnet18")))
    with pytest.raises(ConfigError, match="'framework'.*unknown framework 'jax'"):
        resolve_trainer(TrainingConfig.from_dict(base(datasets, tmp_path, framework="jax")))
    with pytest.raises(ConfigError, match="'task'"):
        resolve_trainer(
            TrainingConfig.from_dict(
                base(datasets, tmp_path, task="classification", framework="ultralytics", architecture="yolov8n",
                     dataset={"path": datasets["folder"], "format": "image_folder"})
            )
        )


@pytest.mark.parametrize("framework,package,arch", [("ultralytics", "ultralytics", "yolov8n"), ("transformers", "transformers", "rtdetr_r18vd")])
def test_optional_frameworks_fail_clearly_when_missing(datasets, tmp_path, framework, package, arch):
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here; the missing-package path cannot be exercised")
    cfg = TrainingConfig.from_dict(base(datasets, tmp_path, framework=framework, architecture=arch))
    with pytest.raises(FrameworkUnavailable) as info:
        resolve_trainer(cfg)
    msg = str(info.value)
    assert f"needs the Python package '{package}'" in msg
    # It lists what is installed, so the user sees what would work instead.
    assert "torchvision: torchvision " in msg and "custom entry points" in msg


def test_cli_config_error_exits_2_before_any_work(datasets, tmp_path):
    cfg = base(datasets, tmp_path, batch_size=0, session_id="s-42")
    events = tmp_path / "events.jsonl"
    proc = cli("train", "--config", write_config(tmp_path / "run.json", **cfg), "--events", events)
    assert proc.returncode == 2, proc.stderr
    assert "config key 'batch_size'" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing may be created for an invalid config"
    (failed,) = read_events(events)
    assert failed["type"] == "failed" and failed["error_type"] == "ConfigError" and failed["exit_code"] == 2
    assert failed["session"] == "s-42"


def test_cli_missing_framework_exits_4(datasets, tmp_path):
    import importlib.util

    if importlib.util.find_spec("ultralytics") is not None:
        pytest.skip("ultralytics is installed here")
    cfg = base(datasets, tmp_path, framework="ultralytics", architecture="yolov8n")
    proc = cli("train", "--config", write_config(tmp_path / "run.json", **cfg), "--events", tmp_path / "ev.jsonl")
    assert proc.returncode == 4
    assert "ultralytics" in proc.stderr and "Installed here" in proc.stderr


def test_cli_unreadable_config(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text("{not json")
    proc = cli("train", "--config", bad)
    assert proc.returncode == 2 and "'--config'" in proc.stderr
    proc = cli("train", "--config", tmp_path / "missing.json")
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_readme_documents_every_key():
    from conftest import REPO

    readme = (REPO / "trainers" / "README.md").read_text()
    missing = [k for k in FIELDS if f"| `{k}` |" not in readme]
    assert not missing, f"trainers/README.md lacks rows for {missing}"
