"""`python3 -m cvtrain evaluate`: one JSON object with COCOeval's twelve statistics."""

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, cli

# The repository keeps a copy of the shared fixtures (fixtures/README.md); CVTRAIN_SHARED_DIR overrides.
SHARED = Path(os.environ.get("CVTRAIN_SHARED_DIR") or REPO)
CASE = SHARED / "fixtures" / "coco-eval" / "coco_val2014_100_fakebbox"
STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def test_evaluate_prints_the_twelve_stats(tmp_path):
    assert CASE.with_suffix(".gt.json").exists(), f"fixture missing at {CASE.parent} (it ships with the repository)"
    out = tmp_path / "stats.json"
    proc = cli("evaluate", "--gt", f"{CASE}.gt.json", "--dt", f"{CASE}.dt.json", "--out", out, "--compact")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    expected = json.loads(Path(f"{CASE}.expected.json").read_text())
    assert [k for k in printed if k in STATS] == STATS
    for k in STATS:
        # This case's published numbers are full doubles (SOURCES.md: tolerance 1e-12).
        assert abs(printed[k] - expected[k]) <= 1e-12, k
    assert len(printed["per_class"]) == 80


def test_evaluate_reports_bad_input(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    proc = cli("evaluate", "--gt", gt, "--dt", dt)
    assert proc.returncode == 3 and "cannot evaluate" in proc.stderr
    proc = cli("evaluate", "--gt", tmp_path / "none.json", "--dt", dt)
    assert proc.returncode == 2 and "none.json" in proc.stderr
