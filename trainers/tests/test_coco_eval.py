"""COCO bbox evaluation: the shared pycocotools fixtures, targeted behaviours, and a
randomised comparison with a slow scalar implementation of the same rules."""

from __future__ import annotations

import bisect
import copy
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from cvtrain.metrics import STAT_NAMES, CocoEvaluator, evaluate_coco, evaluate_files, xyxy_to_xywh

REPO = Path(__file__).resolve().parents[2]
# The repository keeps a copy of the shared fixtures (fixtures/README.md); CVTRAIN_SHARED_DIR overrides.
SHARED = Path(os.environ.get("CVTRAIN_SHARED_DIR") or REPO)
FIXTURES = SHARED / "fixtures" / "coco-eval"


def _fixture_cases() -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name[: -len(".expected.json")] for p in FIXTURES.glob("*.expected.json"))


def _tolerances() -> dict[str, float]:
    """The 'compare with abs tol' column of SOURCES.md, per case."""
    text = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    header = next(r for r in rows if any("abs tol" in c for c in r))
    col = next(i for i, c in enumerate(header) if "abs tol" in c)
    out = {}
    for r in rows:
        m = re.fullmatch(r"`([^`]+)`", r[0])
        if m and len(r) > col:
            out[m.group(1)] = float(r[col])
    return out


CASES = _fixture_cases()
needs_fixtures = pytest.mark.skipif(not CASES, reason=f"fixtures not found at {FIXTURES}")


def test_the_fixtures_are_there():
    # They ship with the repository, so a missing folder is a broken checkout, not a reason to skip.
    assert len(CASES) >= 5, f"expected the five COCO cases under {FIXTURES}, found {sorted(CASES)}"


def _load(case: str) -> tuple[dict, list]:
    with open(FIXTURES / f"{case}.gt.json", encoding="utf-8") as f:
        gt = json.load(f)
    with open(FIXTURES / f"{case}.dt.json", encoding="utf-8") as f:
        dt = json.load(f)
    return gt, dt


def _expected(case: str, full_precision: bool = False) -> dict:
    path = FIXTURES / ("reproduced" if full_precision else "") / (
        f"{case}.full_precision.json" if full_precision else f"{case}.expected.json"
    )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _max_diff(result: dict, expected: dict) -> float:
    assert set(expected) == set(STAT_NAMES)
    return max(abs(result[k] - expected[k]) for k in STAT_NAMES)


def _names(gt: dict) -> dict:
    return {c["id"]: c["name"] for c in gt["categories"]}


# ---------------------------------------------------------------------------
# shared fixtures


@needs_fixtures
def test_every_fixture_has_a_tolerance():
    tol = _tolerances()
    assert set(CASES) <= set(tol), f"cases without a tolerance row in SOURCES.md: {set(CASES) - set(tol)}"


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_fixture_matches_published_numbers(case):
    tol = _tolerances()[case]
    result = evaluate_files(str(FIXTURES / f"{case}.gt.json"), str(FIXTURES / f"{case}.dt.json"))
    assert _max_diff(result, _expected(case)) <= tol
    assert all(type(result[k]) is float for k in STAT_NAMES)


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_fixture_matches_pycocotools_rerun(case):
    # The re-run doubles are pycocotools' own output; only summation order may differ.
    gt, dt = _load(case)
    assert _max_diff(evaluate_coco(gt, dt), _expected(case, full_precision=True)) <= 1e-12


@needs_fixtures
@pytest.mark.parametrize("case", CASES)
def test_fixture_through_incremental_evaluator(case):
    """The training-time path: xyxy predictions per image against the same gt dict."""
    gt, dt = _load(case)
    ev = CocoEvaluator(gt)
    by_image: dict = {}
    for d in dt:
        by_image.setdefault(d["image_id"], []).append(d)
    for image_id, ds in by_image.items():
        xywh = np.array([d["bbox"] for d in ds], dtype=np.float64)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        ev.add(image_id, xyxy, [d["score"] for d in ds], [d["category_id"] for d in ds])
    assert _max_diff(ev.compute(), _expected(case)) <= _tolerances()[case]


@needs_fixtures
def test_ground_truth_added_per_image_matches_the_dict():
    case = "coco_val2014_100_fakebbox"  # crowd regions and segmentation areas
    gt, dt = _load(case)
    ev = CocoEvaluator(categories=gt["categories"])
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        b = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        ev.add_ground_truth(
            img["id"],
            np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1),
            [a["category_id"] for a in anns],
            iscrowd=[a["iscrowd"] for a in anns],
            area=[a["area"] for a in anns],
        )
    for d in dt:
        x, y, w, h = d["bbox"]
        ev.add(d["image_id"], [[x, y, x + w, y + h]], [d["score"]], [d["category_id"]])
    assert _max_diff(ev.compute(), _expected(case)) <= _tolerances()[case]


@needs_fixtures
def test_fixture_per_class_values():
    gt, dt = _load("coco_val2014_100_fakebbox")
    result = evaluate_coco(gt, dt)
    names = _names(gt)
    per_class = result["per_class"]
    assert list(per_class) == [names[c] for c in sorted(names)]
    # SOURCES.md: these classes have detections but no gt
    for cid in (11, 14, 42, 60, 74, 80):
        assert per_class[names[cid]] == -1.0
    # class 59 has gt but no detections: defined, and zero
    assert per_class[names[59]] == 0.0
    # Every category contributes T*R entries to AP, so AP is the mean over classes.
    defined = [v for v in per_class.values() if v != -1.0]
    assert abs(np.mean(defined) - result["AP"]) < 1e-12

    gt, dt = _load("torchmetrics_4img_6cls")
    assert evaluate_coco(gt, dt)["per_class"][_names(gt)[3]] == -1.0
    gt, dt = _load("detectron2_val2017_2img")
    assert evaluate_coco(gt, dt)["per_class"]["bed"] == -1.0


@needs_fixtures
def test_tied_scores_resolve_by_results_order():
    # SOURCES.md: entries 11 and 17 tie at 0.204; swapping them gives AP 0.64311, AP50 0.88119.
    gt, dt = _load("torchmetrics_4img_6cls")
    assert dt[11]["score"] == dt[17]["score"]
    swapped = list(dt)
    swapped[11], swapped[17] = swapped[17], swapped[11]
    result = evaluate_coco(gt, swapped)
    assert abs(result["AP"] - 0.64311) <= 5e-6
    assert abs(result["AP50"] - 0.88119) <= 5e-6
    # and reversing the whole results file of case 1 moves AP50 to 0.69786
    gt, dt = _load("coco_val2014_100_fakebbox")
    assert abs(evaluate_coco(gt, dt[::-1])["AP50"] - 0.69786) <= 5e-6


@needs_fixtures
def test_crowd_regions_change_the_result_as_documented():
    gt, dt = _load("coco_val2014_100_fakebbox")
    no_crowd = dict(gt, annotations=[a for a in gt["annotations"] if not a["iscrowd"]])
    assert abs(evaluate_coco(no_crowd, dt)["AP"] - 0.50365) <= 5e-6
    as_regular = dict(gt, annotations=[dict(a, iscrowd=0) for a in gt["annotations"]])
    assert abs(evaluate_coco(as_regular, dt)["AP"] - 0.50235) <= 5e-6


# ---------------------------------------------------------------------------
# targeted behaviours on hand-made cases


def _gt(anns, images=(1,), cats=((1, "one"),)):
    out = []
    for n, a in enumerate(anns):
        a = dict(a)
        a.setdefault("id", n + 1)
        a.setdefault("image_id", 1)
        a.setdefault("category_id", 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        out.append(a)
    return {
        "images": [{"id": i} for i in images],
        "annotations": out,
        "categories": [{"id": c, "name": n} for c, n in cats],
    }


def _det(bbox, score, image_id=1, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def test_tied_scores_within_an_image_keep_results_order():
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    hit, miss = _det([0, 0, 10, 10], 0.9), _det([50, 50, 10, 10], 0.9)
    assert evaluate_coco(gt, [hit, miss])["AP"] == pytest.approx(1.0, abs=1e-12)
    # the false positive comes first: precision 1/2 at full recall
    assert evaluate_coco(gt, [miss, hit])["AP"] == pytest.approx(0.5, abs=1e-12)


def test_tied_scores_across_images_resolve_by_numeric_image_id():
    gt = _gt([{"bbox": [0, 0, 10, 10], "image_id": 10}], images=(2, 10))
    hit = _det([0, 0, 10, 10], 0.5, image_id=10)
    miss = _det([0, 0, 10, 10], 0.5, image_id=2)
    # image 2 precedes image 10 whatever the file order, so the FP ranks first
    assert evaluate_coco(gt, [hit, miss])["AP"] == pytest.approx(0.5, abs=1e-12)
    assert evaluate_coco(gt, [miss, hit])["AP"] == pytest.approx(0.5, abs=1e-12)


def test_detections_in_crowd_regions_are_ignored_and_crowd_is_not_recalled():
    gt = _gt([
        {"bbox": [0, 0, 10, 10]},
        {"bbox": [50, 50, 100, 100], "iscrowd": 1, "area": 10000},
    ])
    dets = [
        _det([60, 60, 10, 10], 0.99),  # both fully inside the crowd region, ranked first
        _det([100, 100, 20, 20], 0.98),
        _det([0, 0, 10, 10], 0.9),
    ]
    r = evaluate_coco(gt, dets)
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)  # neither TP nor FP
    assert r["AR100"] == 1.0  # only the regular gt counts towards recall


def test_crowd_iou_divides_by_detection_area():
    gt = _gt([
        {"bbox": [0, 0, 10, 10]},
        {"bbox": [50, 50, 100, 100], "iscrowd": 1, "area": 10000},
    ])
    # half of this detection lies in the region: IoU 0.5 by detection area
    # (it would be ~0.01 by union), so it is ignored at IoU .50 only
    dets = [_det([140, 60, 20, 10], 0.95), _det([0, 0, 10, 10], 0.9)]
    r = evaluate_coco(gt, dets)
    assert r["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert r["AP75"] == pytest.approx(0.5, abs=1e-12)
    assert r["AP"] == pytest.approx((1.0 + 9 * 0.5) / 10, abs=1e-12)


def test_regular_gt_is_preferred_over_a_better_crowd_match():
    gt = _gt([
        {"bbox": [0, 0, 10, 10]},
        {"bbox": [0, 0, 100, 100], "iscrowd": 1, "area": 10000},
    ])
    # IoU 0.68 with the regular box, 1.0 with the crowd region: a TP at the four
    # thresholds .50-.65, above that it falls to the crowd region and is ignored
    r = evaluate_coco(gt, [_det([0, 0, 10, 6.8], 0.9)])
    assert r["AP"] == pytest.approx(0.4, abs=1e-12)
    assert r["AR100"] == pytest.approx(0.4, abs=1e-12)


def test_area_ranges_use_the_annotation_area_field():
    # a 20x20 box (400 px: small by its box) whose annotation says 5000 (medium)
    gt = _gt([{"bbox": [0, 0, 20, 20], "area": 5000}])
    r = evaluate_coco(gt, [_det([0, 0, 20, 20], 0.9)])
    assert r["APs"] == -1.0 and r["ARs"] == -1.0
    assert r["APm"] == pytest.approx(1.0, abs=1e-12)
    assert r["APl"] == -1.0


def test_max_dets_truncates_per_image_and_category():
    gt = _gt([{"bbox": [0, 0, 10, 10]}, {"bbox": [20, 0, 10, 10]}])
    dets = [_det([0, 0, 10, 10], 0.9), _det([20, 0, 10, 10], 0.8)]
    r = evaluate_coco(gt, dets)
    assert r["AR1"] == 0.5 and r["AR10"] == 1.0 and r["AR100"] == 1.0

    # one box each of two categories in one image: maxDets=1 keeps both
    gt = _gt(
        [{"bbox": [0, 0, 10, 10]}, {"bbox": [20, 0, 10, 10], "category_id": 2}],
        cats=((1, "one"), (2, "two")),
    )
    dets = [_det([0, 0, 10, 10], 0.9), _det([20, 0, 10, 10], 0.8, category_id=2)]
    assert evaluate_coco(gt, dets)["AR1"] == 1.0


def test_only_the_top_100_detections_per_image_and_category_count():
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    clutter = [_det([500 + i, 500, 10, 10], 0.9) for i in range(100)]
    late_hit = _det([0, 0, 10, 10], 0.1)
    r = evaluate_coco(gt, clutter + [late_hit])
    assert r["AR100"] == 0.0 and r["AP"] == 0.0
    r = evaluate_coco(gt, clutter[:99] + [late_hit])
    assert r["AR100"] == 1.0


def test_category_without_gt_gives_minus_one_and_is_left_out_of_means():
    gt = _gt([{"bbox": [0, 0, 10, 10]}], cats=((1, "one"), (2, "two"), (3, "three")))
    dets = [_det([0, 0, 10, 10], 0.9), _det([0, 0, 10, 10], 0.8, category_id=2)]
    r = evaluate_coco(gt, dets)
    assert r["per_class"] == {"one": pytest.approx(1.0, abs=1e-12), "two": -1.0, "three": -1.0}
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)
    assert r["APl"] == -1.0 and r["ARl"] == -1.0  # no large gt at all


def test_empty_detections():
    gt = _gt([{"bbox": [0, 0, 10, 10]}], cats=((1, "one"), (2, "two")))
    for dt in ([], {"annotations": []}):
        r = evaluate_coco(gt, dt)
        for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
            assert r[k] == 0.0, k
        for k in ("APm", "APl", "ARm", "ARl"):
            assert r[k] == -1.0, k
        assert r["per_class"] == {"one": 0.0, "two": -1.0}
    assert CocoEvaluator(gt).compute() == evaluate_coco(gt, [])


def test_no_ground_truth_at_all():
    gt = _gt([], cats=((1, "one"),))
    r = evaluate_coco(gt, [_det([0, 0, 10, 10], 0.9)])
    assert all(r[k] == -1.0 for k in STAT_NAMES)
    assert r["per_class"] == {"one": -1.0}


def test_per_class_keys_are_category_names_in_id_order():
    gt = _gt(
        [{"bbox": [0, 0, 10, 10], "category_id": 7}],
        cats=((7, "zebra"), (3, "cat"), (5, "cat")),
    )
    r = evaluate_coco(gt, [_det([0, 0, 10, 10], 0.9, category_id=7)])
    # the duplicated name gets its id so neither value is lost
    assert list(r["per_class"]) == ["cat (id 3)", "cat (id 5)", "zebra"]


def test_detections_on_unknown_images_are_refused():
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    with pytest.raises(ValueError, match="absent from the ground truth"):
        evaluate_coco(gt, [_det([0, 0, 10, 10], 0.9, image_id=99)])
    ev = CocoEvaluator(categories=["a"])
    ev.add(5, [[0, 0, 1, 1]], [0.5], [0])
    with pytest.raises(ValueError, match="add_ground_truth"):
        ev.compute()


def test_detections_of_unlisted_categories_are_ignored():
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    r = evaluate_coco(gt, [_det([0, 0, 10, 10], 0.95, category_id=42), _det([0, 0, 10, 10], 0.9)])
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)
    assert list(r["per_class"]) == ["one"]


def test_equal_iou_goes_to_the_later_gt_and_gt_id_zero_counts_as_unmatched():
    # pycocotools records the matched gt id and tests it for truth; a later gt
    # with the same IoU replaces the earlier candidate.
    det = [_det([0, 0, 10, 10], 0.9)]
    later_is_zero = _gt([{"bbox": [0, 0, 10, 10], "id": 5}, {"bbox": [0, 0, 10, 10], "id": 0}])
    assert evaluate_coco(later_is_zero, det)["AR100"] == 0.0
    earlier_is_zero = _gt([{"bbox": [0, 0, 10, 10], "id": 0}, {"bbox": [0, 0, 10, 10], "id": 5}])
    assert evaluate_coco(earlier_is_zero, det)["AR100"] == 0.5


def test_xyxy_conversion():
    out = xyxy_to_xywh(np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32))
    assert out.dtype == np.float64
    assert out.tolist() == [[10.0, 20.0, 20.0, 40.0]]
    assert xyxy_to_xywh([]).shape == (0, 4)
    with pytest.raises(ValueError):
        xyxy_to_xywh([[1, 2, 3]])


def _random_xyxy_case(rng: random.Random):
    gt_rows, dt_rows = [], []
    for image_id in (1, 2, 3):
        for _ in range(rng.randint(0, 5)):
            x, y = rng.randint(0, 40), rng.randint(0, 40)
            gt_rows.append((image_id, [x, y, x + rng.randint(1, 40), y + rng.randint(1, 40)], rng.choice([1, 2])))
        for _ in range(rng.randint(0, 8)):
            x, y = rng.randint(0, 40), rng.randint(0, 40)
            dt_rows.append((image_id, [x, y, x + rng.randint(1, 40), y + rng.randint(1, 40)],
                            rng.choice([0.3, 0.5, 0.7]), rng.choice([1, 2])))
    return gt_rows, dt_rows


def test_incremental_evaluator_equals_evaluate_coco_and_accepts_tensors():
    torch = pytest.importorskip("torch")
    rng = random.Random(3)
    for _ in range(5):
        gt_rows, dt_rows = _random_xyxy_case(rng)
        ev_np = CocoEvaluator(categories={1: "a", 2: "b"})
        ev_t = CocoEvaluator(categories={1: "a", 2: "b"})
        anns = []
        for image_id in (1, 2, 3):
            rows = [r for r in gt_rows if r[0] == image_id]
            boxes = np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 4)
            labels = np.array([r[2] for r in rows], dtype=np.int64)
            ev_np.add_ground_truth(image_id, boxes, labels)
            ev_t.add_ground_truth(torch.tensor(image_id), torch.from_numpy(boxes), torch.from_numpy(labels))
            for b, lab in zip(xyxy_to_xywh(boxes).tolist(), labels.tolist()):
                anns.append({"image_id": image_id, "bbox": b, "category_id": lab})
            rows = [r for r in dt_rows if r[0] == image_id]
            boxes = np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 4)
            scores = np.array([r[2] for r in rows], dtype=np.float32)
            labels = np.array([r[3] for r in rows], dtype=np.int64)
            ev_np.add(image_id, boxes, scores, labels)
            ev_t.add(image_id, torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels))
        dets = []
        for image_id in (1, 2, 3):
            rows = [r for r in dt_rows if r[0] == image_id]
            for r in rows:
                b = xyxy_to_xywh(np.array([r[1]], dtype=np.float32))[0].tolist()
                dets.append({"image_id": image_id, "bbox": b, "category_id": r[3], "score": float(np.float32(r[2]))})
        expected = evaluate_coco(_gt(anns, images=(1, 2, 3), cats=((1, "a"), (2, "b"))), dets)
        assert ev_np.compute() == expected
        assert ev_t.compute() == expected


def test_incremental_evaluator_without_category_names_uses_seen_labels():
    ev = CocoEvaluator()
    ev.add_ground_truth(0, [[0, 0, 10, 10]], [4])
    ev.add(0, [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [4, 9])
    r = ev.compute()
    assert r["per_class"] == {"4": pytest.approx(1.0, abs=1e-12), "9": -1.0}
    ev.reset()
    assert ev.compute()["per_class"] == {}


def test_incremental_evaluator_rejects_bad_shapes():
    ev = CocoEvaluator(categories=["a"])
    with pytest.raises(ValueError):
        ev.add(0, [[0, 0, 1, 1]], [0.5, 0.6], [0])
    with pytest.raises(ValueError):
        ev.add_ground_truth(0, [[0, 0, 1]], [0])


# ---------------------------------------------------------------------------
# randomised comparison with a scalar implementation of the same rules

_IOU_THRS = np.linspace(0.5, 0.95, 10)
_REC_THRS = np.linspace(0.0, 1.0, 101)
_AREAS = [(0, 1e10), (0, 1024), (1024, 9216), (9216, 1e10)]


def _scalar_iou(d, g, crowd):
    w = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    h = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    da = d[2] * d[3]
    return inter / (da if crowd else da + g[2] * g[3] - inter)


def _scalar_coco(gt, dts):
    """One (category, area, maxDet, threshold) at a time, in plain Python."""
    imgs = sorted({i["id"] for i in gt["images"]})
    cats = sorted({c["id"] for c in gt["categories"]})
    dets = [dict(d, uid=n + 1) for n, d in enumerate(dts)]
    prec = np.full((10, 101, len(cats), 4, 3), -1.0)
    rec = np.full((10, len(cats), 4, 3), -1.0)
    for k, c in enumerate(cats):
        for a, (lo, hi) in enumerate(_AREAS):
            n_pos = 0
            per_image = []  # (image, [(score, truthy per thr, ignored per thr)])
            for i in imgs:
                g = [x for x in gt["annotations"] if x["image_id"] == i and x["category_id"] == c]
                d = sorted((x for x in dets if x["image_id"] == i and x["category_id"] == c), key=lambda x: -x["score"])[:100]
                ig = [bool(x["iscrowd"]) or x["area"] < lo or x["area"] > hi for x in g]
                n_pos += ig.count(False)
                order = sorted(range(len(g)), key=lambda j: ig[j])
                rows = [(x["score"], [], []) for x in d]
                for thr in _IOU_THRS:
                    used = set()
                    for x, row in zip(d, rows):
                        best, m = min(thr, 1 - 1e-10), None
                        for j in order:
                            if j in used and not g[j]["iscrowd"]:
                                continue
                            if m is not None and not ig[m] and ig[j]:
                                break
                            v = _scalar_iou(x["bbox"], g[j]["bbox"], g[j]["iscrowd"])
                            if v >= best:
                                best, m = v, j
                        if m is not None:
                            used.add(m)
                        truthy = m is not None and g[m]["id"] != 0
                        area = x["bbox"][2] * x["bbox"][3]
                        ignored = (m is not None and ig[m]) or (not truthy and (area < lo or area > hi))
                        row[1].append(truthy)
                        row[2].append(ignored)
                per_image.append(rows)
            if n_pos == 0:
                continue
            for m_i, max_det in enumerate((1, 10, 100)):
                pool = [r for rows in per_image for r in rows[:max_det]]
                pool.sort(key=lambda r: -r[0])  # stable, like mergesort
                for t in range(10):
                    tp = fp = 0
                    rc, pr = [], []
                    for _, truthy, ignored in pool:
                        if not ignored[t]:
                            tp += truthy[t]
                            fp += not truthy[t]
                        rc.append(tp / n_pos)
                        pr.append(tp / (fp + tp + np.spacing(1)))
                    rec[t, k, a, m_i] = rc[-1] if rc else 0.0
                    for j in range(len(pr) - 2, -1, -1):
                        pr[j] = max(pr[j], pr[j + 1])
                    for r_i, r in enumerate(_REC_THRS):
                        j = bisect.bisect_left(rc, r)
                        prec[t, r_i, k, a, m_i] = pr[j] if j < len(pr) else 0.0

    def mean(s):
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    p100 = prec[..., 2]
    return {
        "AP": mean(p100[:, :, :, 0]), "AP50": mean(p100[0, :, :, 0]), "AP75": mean(p100[5, :, :, 0]),
        "APs": mean(p100[:, :, :, 1]), "APm": mean(p100[:, :, :, 2]), "APl": mean(p100[:, :, :, 3]),
        "AR1": mean(rec[:, :, 0, 0]), "AR10": mean(rec[:, :, 0, 1]), "AR100": mean(rec[:, :, 0, 2]),
        "ARs": mean(rec[:, :, 1, 2]), "ARm": mean(rec[:, :, 2, 2]), "ARl": mean(rec[:, :, 3, 2]),
    }


def _random_case(rng: random.Random):
    anns, dets = [], []
    for image_id in (3, 1, 2):
        boxes = []
        for _ in range(rng.randint(0, 7)):
            # coarse grid: exact IoU ties and areas on the 32^2 / 96^2 boundaries happen
            w, h = rng.choice([8, 16, 32, 48, 96, 120]), rng.choice([8, 16, 32, 48, 96, 128])
            box = [rng.randrange(0, 160, 8), rng.randrange(0, 160, 8), w, h]
            boxes.append(box)
            anns.append({
                "id": len(anns) + rng.choice([0, 1, 1, 1]),  # occasional id 0
                "image_id": image_id,
                "category_id": rng.choice([1, 2, 3]),
                "bbox": box,
                "area": rng.choice([w * h, w * h, 1024, 9216, w * h * 0.7]),
                "iscrowd": int(rng.random() < 0.15),
            })
        for _ in range(rng.randint(0, 25)):
            if boxes and rng.random() < 0.7:
                b = rng.choice(boxes)
                box = [b[0] + rng.choice([0, 0, 4, -4, 8]), b[1] + rng.choice([0, 4, -8]), b[2], b[3] + rng.choice([0, 8, -4])]
            else:
                box = [rng.randrange(0, 200, 4), rng.randrange(0, 200, 4), rng.choice([8, 32, 100]), rng.choice([8, 32, 100])]
            dets.append({"image_id": image_id, "category_id": rng.choice([1, 2, 3, 4]), "bbox": box,
                         "score": rng.choice([0.2, 0.4, 0.4, 0.6, 0.9])})
    gt = {"images": [{"id": i} for i in (1, 2, 3)], "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)]}
    return gt, dets


def test_random_cases_match_the_scalar_implementation():
    rng = random.Random(1234)
    for n in range(40):
        gt, dets = _random_case(rng)
        expected = _scalar_coco(copy.deepcopy(gt), dets)
        got = evaluate_coco(gt, dets)
        for k in STAT_NAMES:
            assert got[k] == pytest.approx(expected[k], abs=1e-12), (n, k)
