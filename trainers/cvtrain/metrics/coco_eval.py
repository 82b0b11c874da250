"""COCO bounding-box evaluation that reproduces pycocotools' ``COCOeval`` in numpy.

pycocotools is not a dependency: it needs a C extension and a compiler, and the
trainer image must run where neither is available. The numbers must still be the
ones users compare against papers and leaderboards, so this module follows
pycocotools' algorithm (default ``iouType='bbox'`` parameters) decision for
decision, including the behaviours that are quirks rather than design:

* Area ranges are applied to the ground truth's ``area`` field (for COCO that is
  the segmentation area), never to its box. Detections get ``area = w * h``.
* ``ignore`` of a ground truth is its ``iscrowd`` flag (pycocotools overwrites any
  ``ignore`` key already on the annotation), widened per area range by the range.
* IoU against a crowd region divides by the detection's area; a crowd region can
  absorb any number of detections, which are then ignored (neither TP nor FP),
  and crowd regions never count towards recall.
* A detection prefers the best non-ignored ground truth; only when none clears
  the threshold may it match an ignored one. Among equal IoUs the later ground
  truth (annotation-file order) wins.
* ``maxDets`` truncates per image *and category*, after a stable (mergesort)
  sort by descending score; across images the detections are concatenated in
  ascending image-id order and stable-sorted again, so tied scores resolve by
  image id, then by results-file order.
* precision = tp / (tp + fp + np.spacing(1)), made monotone from the right and
  read at 101 recall points with ``searchsorted(side='left')``.
* Categories or area ranges without non-ignored ground truth give -1 and are left
  out of means; a statistic is -1 only when every entry is -1.
* A ground truth whose ``id`` is 0 is counted as unmatched after matching (pycocotools
  tests the matched id's truthiness). Number annotation ids from 1.

Known deviation: pycocotools looks annotations up by ``id`` through a dict, so
duplicate ground-truth ids make it evaluate the last duplicate twice; here each
annotation is evaluated as written. Malformed files only.

Only the greedy matching is inherently sequential (a ground truth taken by a
higher-scoring detection is unavailable to the next one). It runs as "rounds":
round r handles, in every (image, category) group at once, the r-th detection
that overlaps any ground truth at IoU >= 0.5, vectorised over the 10 IoU
thresholds and 4 area ranges. Detections overlapping nothing cannot match and
skip the loop entirely, so the Python-level loop runs at most ``maxDets`` times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "STAT_NAMES",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "AREA_RANGES",
    "AREA_LABELS",
    "MAX_DETS",
    "CocoEvaluator",
    "evaluate_coco",
    "evaluate_files",
    "xyxy_to_xywh",
]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# Built with the exact expressions pycocotools' Params uses: the thresholds are
# compared with ==/>= against IoUs, so an ulp of difference (0.7 vs linspace's
# 0.7000000000000001) would change results.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array(
    [[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64
)
AREA_LABELS = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)

# pycocotools caps the threshold at 1 - 1e-10 so that IoU == 1 still needs a
# strictly positive margin to beat it.
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# Bounds the memory of the (detection, ground truth) pair arrays when one image
# has many boxes of one class (crowded scenes): ~ 8 float64 arrays of this length.
_PAIR_CHUNK = 1 << 21


# ----------------------------------------------------------------------------
# conversions


def _to_numpy(x: Any) -> np.ndarray:
    """Array view of numpy input, lists, or torch tensors (without importing torch)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        # numpy has no bfloat16; upcasting half types first also avoids float16
        # rounding in the IoU arithmetic.
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _scalar(x: Any) -> Any:
    return x.item() if hasattr(x, "item") and not isinstance(x, (str, bytes)) else x


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``[x1, y1, x2, y2]`` (torchvision) to ``[x, y, w, h]`` (COCO), as float64.

    ``w = x2 - x1`` is computed in float64 after upcasting. A COCO box taken to
    xyxy and back is not always bit-identical (``(x + w) - x != w`` for some
    floats); the difference is an ulp and matters only for an IoU sitting exactly
    on a threshold.
    """
    b = np.asarray(_to_numpy(boxes), dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    out = b.copy()
    out[:, 2] = b[:, 2] - b[:, 0]
    out[:, 3] = b[:, 3] - b[:, 1]
    return out


def _boxes_xywh(boxes: Any, what: str) -> np.ndarray:
    b = np.asarray(_to_numpy(boxes), dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {b.shape}")
    return b


def _vector(x: Any, n: int, dtype: Any, what: str) -> np.ndarray:
    v = np.asarray(_to_numpy(x)).reshape(-1)
    if v.shape[0] != n:
        raise ValueError(f"{what} has {v.shape[0]} entries for {n} boxes")
    return v.astype(dtype, copy=False)


# ----------------------------------------------------------------------------
# the evaluation proper, on indexed arrays


@dataclass
class _Gt:
    img: np.ndarray  # int64 index into the sorted image ids
    cat: np.ndarray  # int64 index into the sorted category ids
    boxes: np.ndarray  # (N, 4) float64 xywh
    area: np.ndarray  # float64, the annotation's `area` field
    ignore: np.ndarray  # bool: truthy iscrowd (pycocotools' gt['ignore'])
    crowd: np.ndarray  # bool: int(iscrowd) != 0 (used for IoU and re-matching)
    id_nonzero: np.ndarray  # bool: matches to a gt with id 0 count as unmatched


@dataclass
class _Dt:
    img: np.ndarray
    cat: np.ndarray
    boxes: np.ndarray
    score: np.ndarray  # float64


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    flags = np.ones(sorted_keys.shape[0], dtype=bool)
    flags[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return flags


def _rank_in_group(sorted_keys: np.ndarray) -> np.ndarray:
    n = sorted_keys.shape[0]
    idx = np.arange(n, dtype=np.int64)
    first = np.maximum.accumulate(np.where(_group_starts(sorted_keys), idx, 0)) if n else idx
    return idx - first


def _pair_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of row-aligned (detection, gt) xywh pairs, as maskApi.c's bbIou.

    The operation order is kept (``min(w + x) - max(x)``, ``(da + ga) - i``)
    so results are bit-identical to pycocotools.
    """
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da = d[:, 2] * d[:, 3]
    union = np.where(crowd, da, da + g[:, 2] * g[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)
    return iou


def _candidate_pairs(
    gt: _Gt, g_keys: np.ndarray, d_boxes: np.ndarray, d_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(det, gt, iou) for same-group pairs with IoU at or above the lowest threshold.

    Pairs come out ordered by detection, then by gt position, which the matching
    relies on. Pairs below every threshold can never match, so they are dropped
    here and never reach the sequential part.
    """
    lo = np.searchsorted(g_keys, d_keys, side="left")
    counts = np.searchsorted(g_keys, d_keys, side="right") - lo
    thr_min = _MATCH_THRESHOLDS.min()
    out_d, out_g, out_iou = [], [], []
    ends = np.cumsum(counts)
    n = d_keys.shape[0]
    start = 0
    while start < n:
        # grow the chunk of detections until it holds about _PAIR_CHUNK pairs
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + _PAIR_CHUNK, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            det = np.repeat(np.arange(start, stop, dtype=np.int64), c)
            offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            gi = lo[det] + offs
            iou = _pair_iou(d_boxes[det], gt.boxes[gi], gt.crowd[gi])
            keep = iou >= thr_min
            out_d.append(det[keep])
            out_g.append(gi[keep])
            out_iou.append(iou[keep])
        start = stop
    if not out_d:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def _match(
    gt: _Gt,
    g_ig: np.ndarray,
    d_keys: np.ndarray,
    c_det: np.ndarray,
    c_gt: np.ndarray,
    c_iou: np.ndarray,
    n_dets: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of evaluateImg for all thresholds and area ranges.

    Returns ``truthy`` (matched to a gt whose id is non-zero: pycocotools'
    ``dtm != 0``) and ``ignored`` (matched to an ignored gt), both (D, T, A).
    """
    T, A = _MATCH_THRESHOLDS.shape[0], g_ig.shape[1]
    truthy = np.zeros((n_dets, T, A), dtype=bool)
    ignored = np.zeros((n_dets, T, A), dtype=bool)
    if c_det.shape[0] == 0:
        return truthy, ignored

    # Rank of each overlapping detection among the overlapping detections of its
    # group: round r processes rank r of every group at once.
    cand_dets, inverse = np.unique(c_det, return_inverse=True)
    cand_rank = _rank_in_group(d_keys[cand_dets])
    pair_round = cand_rank[inverse]
    order = np.argsort(pair_round, kind="stable")  # keeps (det, gt) order inside a round
    c_det, c_gt, c_iou, pair_round = c_det[order], c_gt[order], c_iou[order], pair_round[order]
    bounds = np.searchsorted(pair_round, np.arange(int(pair_round[-1]) + 2), side="left")

    taken = np.zeros((gt.img.shape[0], T, A), dtype=bool)
    crowd = gt.crowd[:, None, None]
    area_idx = np.arange(A)[None, None, :]
    for r in range(bounds.shape[0] - 1):
        s, e = bounds[r], bounds[r + 1]
        pd, pg, pi = c_det[s:e], c_gt[s:e], c_iou[s:e]
        seg_start = _group_starts(pd)
        starts = np.flatnonzero(seg_start)
        seg = np.cumsum(seg_start) - 1

        # A gt taken at (t, a) stays available only if it is a crowd region.
        valid = (pi[:, None] >= _MATCH_THRESHOLDS[None, :])[:, :, None] & (~taken[pg] | crowd[pg])
        ig = g_ig[pg][:, None, :]
        # Ignored gts sort last and the scan stops at the first ignored gt once a
        # regular one has matched: an ignored gt is eligible only when no regular
        # gt is.
        has_regular = np.logical_or.reduceat(valid & ~ig, starts, axis=0)
        sel = valid & ~(ig & has_regular[seg])
        iou_sel = np.where(sel, pi[:, None, None], -np.inf)
        best_iou = np.maximum.reduceat(iou_sel, starts, axis=0)
        # `>=` in the scan lets a later gt with an equal IoU replace the current
        # match, so the highest position among the best wins.
        best = np.maximum.reduceat(
            np.where(sel & (iou_sel == best_iou[seg]), pg[:, None, None], -1), starts, axis=0
        )
        hit = best >= 0
        dets = pd[starts]
        safe = np.where(hit, best, 0)
        truthy[dets] = hit & gt.id_nonzero[safe]
        ignored[dets] = hit & g_ig[safe, area_idx]
        ii, tt, aa = np.nonzero(hit)
        taken[best[ii, tt, aa], tt, aa] = True
    return truthy, ignored


@dataclass
class _Accumulated:
    precision: np.ndarray  # (T, R, K, A, M), -1 where undefined
    recall: np.ndarray  # (T, K, A, M), -1 where undefined


def _evaluate_indexed(num_images: int, num_cats: int, gt: _Gt, dt: _Dt) -> _Accumulated:
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    K = num_cats
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))

    lo, hi = AREA_RANGES[:, 0], AREA_RANGES[:, 1]
    # gt: grouped by (category, image), annotation-file order kept inside a group
    g_order = np.argsort(gt.cat * num_images + gt.img, kind="stable")
    gt = _Gt(*(getattr(gt, f)[g_order] for f in _Gt.__dataclass_fields__))
    g_keys = gt.cat * num_images + gt.img
    g_ig = gt.ignore[:, None] | (gt.area[:, None] < lo) | (gt.area[:, None] > hi)  # (G, A)
    npig = np.stack([np.bincount(gt.cat[~g_ig[:, a]], minlength=K) for a in range(A)], axis=1)

    # dt: grouped likewise, by descending score inside a group (stable), then
    # truncated to the largest maxDets per group.
    d_keys_all = dt.cat * num_images + dt.img
    d_order = np.lexsort((-dt.score, d_keys_all))
    rank = _rank_in_group(d_keys_all[d_order])
    keep = rank < MAX_DETS[-1]
    d_order, rank = d_order[keep], rank[keep]
    d_img, d_cat, d_boxes, d_score = dt.img[d_order], dt.cat[d_order], dt.boxes[d_order], dt.score[d_order]
    d_keys = d_keys_all[d_order]
    n_dets = d_order.shape[0]

    c_det, c_gt, c_iou = _candidate_pairs(gt, g_keys, d_boxes, d_keys)
    truthy, ignored = _match(gt, g_ig, d_keys, c_det, c_gt, c_iou, n_dets)

    # Unmatched detections outside the area range do not count as false positives.
    d_area = d_boxes[:, 2] * d_boxes[:, 3]
    outside = (d_area[:, None] < lo) | (d_area[:, None] > hi)
    ignored |= ~truthy & outside[:, None, :]
    tps = truthy & ~ignored
    fps = ~truthy & ~ignored

    # Accumulation order inside a category: descending score, ties by image id,
    # then by the per-group order (= results-file order for equal scores).
    acc_order = np.lexsort((rank, d_img, -d_score, d_cat))
    cat_bounds = np.searchsorted(d_cat[acc_order], np.arange(K + 1), side="left")
    eps = np.spacing(1)
    for k in range(K):
        if not npig[k].any():
            continue
        seg = acc_order[cat_bounds[k] : cat_bounds[k + 1]]
        for m, max_det in enumerate(MAX_DETS):
            sub = seg[rank[seg] < max_det]
            nd = sub.shape[0]
            tp_sum = np.cumsum(tps[sub], axis=0).astype(np.float64)  # (nd, T, A)
            fp_sum = np.cumsum(fps[sub], axis=0).astype(np.float64)
            for a in range(A):
                if npig[k, a] == 0:
                    continue
                tp = np.ascontiguousarray(tp_sum[:, :, a].T)  # (T, nd)
                fp = np.ascontiguousarray(fp_sum[:, :, a].T)
                rc = tp / npig[k, a]
                pr = tp / (fp + tp + eps)
                recall[:, k, a, m] = rc[:, -1] if nd else 0.0
                if nd == 0:
                    precision[:, :, k, a, m] = 0.0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(T):
                    inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    q = np.zeros(R)
                    ok = inds < nd
                    q[ok] = pr[t, inds[ok]]
                    precision[t, :, k, a, m] = q
    return _Accumulated(precision, recall)


def _summarize_one(acc: _Accumulated, ap: bool, iou_thr: float | None = None, area: str = "all", max_dets: int = 100) -> float:
    # Same indexing as COCOeval.summarize so np.mean sums in the same order.
    aind = [AREA_LABELS.index(area)]
    mind = [MAX_DETS.index(max_dets)]
    s = acc.precision if ap else acc.recall
    if iou_thr is not None:
        s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
    s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
    s = s[s > -1]
    return -1.0 if s.size == 0 else float(np.mean(s))


def _summarize(acc: _Accumulated, cat_names: Sequence[str]) -> dict:
    stats = {
        "AP": _summarize_one(acc, True),
        "AP50": _summarize_one(acc, True, iou_thr=0.5),
        "AP75": _summarize_one(acc, True, iou_thr=0.75),
        "APs": _summarize_one(acc, True, area="small"),
        "APm": _summarize_one(acc, True, area="medium"),
        "APl": _summarize_one(acc, True, area="large"),
        "AR1": _summarize_one(acc, False, max_dets=MAX_DETS[0]),
        "AR10": _summarize_one(acc, False, max_dets=MAX_DETS[1]),
        "AR100": _summarize_one(acc, False, max_dets=MAX_DETS[2]),
        "ARs": _summarize_one(acc, False, area="small"),
        "ARm": _summarize_one(acc, False, area="medium"),
        "ARl": _summarize_one(acc, False, area="large"),
    }
    per_class = {}
    for k, name in enumerate(cat_names):
        s = acc.precision[:, :, k, 0, -1]
        s = s[s > -1]
        per_class[name] = -1.0 if s.size == 0 else float(np.mean(s))
    stats["per_class"] = per_class
    return stats


def _unique_names(cat_ids: Sequence[Any], names: Mapping[Any, str]) -> list[str]:
    raw = [str(names.get(c, c)) for c in cat_ids]
    dup = {n for n in raw if raw.count(n) > 1}
    # Two categories sharing a name would silently collapse into one per_class key.
    return [f"{n} (id {c})" if n in dup else n for n, c in zip(raw, cat_ids)]


def _empty_gt() -> _Gt:
    z = np.zeros(0, dtype=np.int64)
    b = np.zeros(0, dtype=bool)
    return _Gt(z, z.copy(), np.zeros((0, 4)), np.zeros(0), b, b.copy(), b.copy())


# ----------------------------------------------------------------------------
# COCO json dicts


def _parse_gt(gt: Mapping[str, Any]) -> tuple[list[Any], list[Any], list[str], _Gt]:
    if not isinstance(gt, Mapping) or "images" not in gt or "categories" not in gt:
        raise ValueError("ground truth must be a COCO dict with 'images', 'annotations' and 'categories'")
    img_ids = sorted({img["id"] for img in gt["images"]})
    cat_ids = sorted({c["id"] for c in gt["categories"]})
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    img_index = {i: n for n, i in enumerate(img_ids)}
    cat_index = {c: n for n, c in enumerate(cat_ids)}

    img, cat, boxes, area, ignore, crowd, idnz = [], [], [], [], [], [], []
    for ann in gt.get("annotations", []):
        ii = img_index.get(ann["image_id"])
        ci = cat_index.get(ann["category_id"])
        # pycocotools evaluates only annotations of listed images and categories.
        if ii is None or ci is None:
            continue
        bb = ann["bbox"]
        if len(bb) != 4:
            raise ValueError(f"annotation {ann.get('id')}: bbox must be [x, y, w, h], got {bb!r}")
        iscrowd = ann.get("iscrowd", 0)
        img.append(ii)
        cat.append(ci)
        boxes.append(bb)
        # COCO files always carry `area`; for hand-made dicts without it, w*h is
        # what a converter from boxes would have written.
        area.append(ann["area"] if "area" in ann else float(bb[2]) * float(bb[3]))
        ignore.append(bool(iscrowd))
        crowd.append(int(iscrowd) != 0)
        idnz.append(ann.get("id", 1) != 0)
    parsed = _Gt(
        img=np.asarray(img, dtype=np.int64),
        cat=np.asarray(cat, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        area=np.asarray(area, dtype=np.float64),
        ignore=np.asarray(ignore, dtype=bool),
        crowd=np.asarray(crowd, dtype=bool),
        id_nonzero=np.asarray(idnz, dtype=bool),
    )
    return img_ids, cat_ids, _unique_names(cat_ids, names), parsed


def _parse_dt(dt: Any, img_index: Mapping[Any, int], cat_index: Mapping[Any, int]) -> _Dt:
    if isinstance(dt, Mapping):
        dt = dt.get("annotations", [])
    img, cat, boxes, score = [], [], [], []
    unknown = set()
    for d in dt:
        ii = img_index.get(d["image_id"])
        if ii is None:
            unknown.add(d["image_id"])
            continue
        ci = cat_index.get(d["category_id"])
        if ci is None:
            continue  # pycocotools only loads detections of evaluated categories
        bb = d["bbox"]
        if len(bb) != 4:
            raise ValueError(f"detection bbox must be [x, y, w, h], got {bb!r}")
        img.append(ii)
        cat.append(ci)
        boxes.append(bb)
        score.append(d["score"])
    if unknown:
        shown = sorted(unknown, key=str)[:10]
        raise ValueError(
            f"detections refer to {len(unknown)} image id(s) absent from the ground truth's images, e.g. {shown}"
        )
    return _Dt(
        img=np.asarray(img, dtype=np.int64),
        cat=np.asarray(cat, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        score=np.asarray(score, dtype=np.float64),
    )


def evaluate_coco(gt: dict, dt: list | dict) -> dict:
    """COCOeval bbox statistics for a COCO ground-truth dict and COCO results.

    ``gt`` holds ``images``, ``annotations`` (``bbox`` as ``[x, y, w, h]``, ``area``,
    ``iscrowd``, ``id``) and ``categories``; all listed images and categories are
    evaluated. ``dt`` is a list of ``{image_id, category_id, bbox: [x, y, w, h],
    score}`` or a dict holding that list under ``annotations``. Detections of
    unlisted categories are ignored; detections on unlisted images raise
    ``ValueError`` (pycocotools refuses them too).

    Returns the twelve statistics of ``COCOeval.summarize()`` under
    ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl`` and ``per_class``:
    category name -> AP@[.5:.95] (area all, 100 dets), -1 for a category
    without ground truth. All values are Python floats.
    """
    img_ids, cat_ids, names, g = _parse_gt(gt)
    d = _parse_dt(dt, {i: n for n, i in enumerate(img_ids)}, {c: n for n, c in enumerate(cat_ids)})
    acc = _evaluate_indexed(len(img_ids), len(cat_ids), g, d)
    return _summarize(acc, names)


def evaluate_files(gt_path: str, dt_path: str) -> dict:
    """:func:`evaluate_coco` on a ground-truth JSON file and a results JSON file."""
    with open(gt_path, encoding="utf-8") as f:
        gt = json.load(f)
    with open(dt_path, encoding="utf-8") as f:
        dt = json.load(f)
    return evaluate_coco(gt, dt)


# ----------------------------------------------------------------------------
# incremental evaluator for validation loops


class CocoEvaluator:
    """Collects per-image predictions during validation and evaluates them as COCOeval.

    Boxes are ``[x1, y1, x2, y2]`` (what torchvision detection models output and
    take as targets) and are converted to COCO's ``[x, y, w, h]`` with
    ``w = x2 - x1, h = y2 - y1`` in float64 (see :func:`xyxy_to_xywh`). Inputs may
    be numpy arrays, lists or torch tensors on any device.

    Ground truth comes either from a COCO dict passed as ``gt`` (then ``labels``
    are that dict's ``category_id`` values and its annotation ``area``/``iscrowd``
    are used), or from :meth:`add_ground_truth` calls, or both. Every image that
    receives predictions must be registered by one of them; call
    ``add_ground_truth(image_id, [], [])`` for images without objects, which
    still count (their detections are false positives). A prediction for an
    unknown image raises ``ValueError`` in :meth:`compute`, since it almost
    always means mismatched image ids.

    ``categories`` names the classes when ``gt`` is not given: a list of COCO
    category dicts (``id``, ``name``), a mapping ``id -> name``, or a sequence
    of names whose positions are the ids. Without either, the classes are the
    labels seen in ground truth and predictions, named ``str(label)``.

    Ground truth added here gets ids from 1, so pycocotools' id-0 quirk cannot
    trigger; its ``area`` defaults to the box area (COCO datasets should pass the
    annotation's segmentation ``area`` to reproduce official numbers).
    """

    def __init__(self, gt: Mapping[str, Any] | None = None, categories: Any = None):
        if gt is not None and categories is not None:
            raise ValueError("pass either a COCO ground-truth dict or categories, not both")
        self._gt_dict = gt
        self._categories = self._parse_categories(categories) if categories is not None else None
        self.reset()

    @staticmethod
    def _parse_categories(categories: Any) -> dict[int, str]:
        if isinstance(categories, Mapping):
            return {int(k): str(v) for k, v in categories.items()}
        cats = list(categories)
        if all(isinstance(c, Mapping) for c in cats):
            return {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
        if all(isinstance(c, str) for c in cats):
            return {i: n for i, n in enumerate(cats)}
        raise ValueError("categories must be COCO category dicts, a mapping id -> name, or a list of names")

    def reset(self) -> None:
        self._gt_img_ids: list[Any] = []  # one image id per chunk
        self._gt_chunks: list[tuple[np.ndarray, ...]] = []
        self._dt_img_ids: list[Any] = []
        self._dt_chunks: list[tuple[np.ndarray, ...]] = []
        self._images: dict[Any, None] = {}
        if self._gt_dict is not None:
            img_ids, cat_ids, names, parsed = _parse_gt(self._gt_dict)
            self._dict_gt = (img_ids, parsed)
            self._dict_cats = (cat_ids, names)
            self._images.update(dict.fromkeys(img_ids))
        else:
            self._dict_gt = None
            self._dict_cats = None

    def add_ground_truth(
        self,
        image_id: Any,
        boxes_xyxy: Any,
        labels: Any,
        iscrowd: Any = None,
        area: Any = None,
    ) -> None:
        """Registers an image and its ground-truth boxes (possibly none)."""
        image_id = _scalar(image_id)
        boxes = xyxy_to_xywh(boxes_xyxy)
        n = boxes.shape[0]
        lab = _vector(labels, n, np.int64, "labels")
        crowd = np.zeros(n, dtype=bool) if iscrowd is None else _vector(iscrowd, n, np.int64, "iscrowd") != 0
        ar = boxes[:, 2] * boxes[:, 3] if area is None else _vector(area, n, np.float64, "area")
        self._images[image_id] = None
        if n:
            self._gt_img_ids.append(image_id)
            self._gt_chunks.append((lab, boxes, ar, crowd))

    def add(self, image_id: Any, boxes_xyxy: Any, scores: Any, labels: Any) -> None:
        """Adds one image's predictions (a model's output for that image)."""
        image_id = _scalar(image_id)
        boxes = xyxy_to_xywh(boxes_xyxy)
        n = boxes.shape[0]
        sc = _vector(scores, n, np.float64, "scores")
        lab = _vector(labels, n, np.int64, "labels")
        if n:
            self._dt_img_ids.append(image_id)
            self._dt_chunks.append((lab, boxes, sc))

    def add_batch(self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Adds torchvision-style outputs: dicts with ``boxes``, ``scores``, ``labels``."""
        for image_id, p in zip(image_ids, predictions):
            self.add(image_id, p["boxes"], p["scores"], p["labels"])

    def _category_table(self) -> tuple[np.ndarray, list[str]]:
        if self._dict_cats is not None:
            cat_ids, names = self._dict_cats
            return np.asarray(cat_ids, dtype=np.int64), names
        if self._categories is not None:
            ids = sorted(self._categories)
            return np.asarray(ids, dtype=np.int64), _unique_names(ids, self._categories)
        seen = [c[0] for c in self._gt_chunks] + [c[0] for c in self._dt_chunks]
        ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
        return ids, [str(int(i)) for i in ids]

    def compute(self) -> dict:
        """The same dict as :func:`evaluate_coco`."""
        unknown = {i for i in self._dt_img_ids if i not in self._images}
        if unknown:
            shown = sorted(unknown, key=str)[:10]
            raise ValueError(
                f"predictions for {len(unknown)} image(s) without registered ground truth, e.g. {shown}; "
                "call add_ground_truth(image_id, [], []) for images without objects"
            )
        img_ids = sorted(self._images)
        img_index = {i: n for n, i in enumerate(img_ids)}
        cat_ids, names = self._category_table()

        def cat_idx(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pos = np.searchsorted(cat_ids, labels)
            pos_c = np.minimum(pos, max(len(cat_ids) - 1, 0))
            known = (pos < len(cat_ids)) & (cat_ids[pos_c] == labels) if len(cat_ids) else np.zeros(len(labels), bool)
            return pos_c, known

        gts = []
        if self._dict_gt is not None:
            dict_img_ids, parsed = self._dict_gt
            # the dict's indices refer to its own sorted image list; remap
            remap = np.asarray([img_index[i] for i in dict_img_ids], dtype=np.int64)
            gts.append(_Gt(remap[parsed.img] if len(remap) else parsed.img, parsed.cat, parsed.boxes,
                           parsed.area, parsed.ignore, parsed.crowd, parsed.id_nonzero))
        for image_id, (lab, boxes, ar, crowd) in zip(self._gt_img_ids, self._gt_chunks):
            ci, known = cat_idx(lab)
            n = int(known.sum())
            gts.append(_Gt(
                img=np.full(n, img_index[image_id], dtype=np.int64),
                cat=ci[known], boxes=boxes[known], area=ar[known],
                ignore=crowd[known], crowd=crowd[known], id_nonzero=np.ones(n, dtype=bool),
            ))
        g = _empty_gt() if not gts else _Gt(*(np.concatenate([getattr(x, f) for x in gts])
                                             for f in _Gt.__dataclass_fields__))

        d_img, d_cat, d_boxes, d_score = [], [], [], []
        for image_id, (lab, boxes, sc) in zip(self._dt_img_ids, self._dt_chunks):
            ci, known = cat_idx(lab)
            d_img.append(np.full(int(known.sum()), img_index[image_id], dtype=np.int64))
            d_cat.append(ci[known])
            d_boxes.append(boxes[known])
            d_score.append(sc[known])
        if d_img:
            d = _Dt(np.concatenate(d_img), np.concatenate(d_cat), np.concatenate(d_boxes), np.concatenate(d_score))
        else:
            d = _Dt(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
        acc = _evaluate_indexed(len(img_ids), len(cat_ids), g, d)
        return _summarize(acc, names)
