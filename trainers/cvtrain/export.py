"""ONNX export, verified by running the exported file.

The exported graphs take float32 RGB images in 0..1, NCHW; normalisation and (for
detectors) resizing and post-processing are inside the graph, so a consumer needs no
knowledge of the training recipe.

Verification runs the file with the first runtime that can: onnxruntime where installed
(the GPU machine, the trainer image), else OpenCV's dnn module (Debian's python3-opencv,
which runs torchvision classifiers but not detection post-processing). The result is
compared with torch's output on the same input; `max_abs_diff` and the runtime go into the
`artifact` event. When no runtime can run the graph the artifact says verified=false and
why, after `onnx.checker` has validated the file.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from . import compat, settings


class NormalizedClassifier(nn.Module):
    """0..1 input -> logits, with the training normalisation inside.

    The normalisation is a per-channel 1x1 convolution (weight 1/std, bias -mean/std):
    the same arithmetic as (x - mean) / std, in the one form every ONNX runtime handles
    (OpenCV 4.6 rejects a broadcast Sub/Div against a constant with a dynamic batch)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.normalize = nn.Conv2d(3, 3, kernel_size=1, groups=3, bias=True)
        with torch.no_grad():
            std_t = torch.tensor(std, dtype=torch.float32)
            self.normalize.weight.copy_((1.0 / std_t).view(3, 1, 1, 1))
            self.normalize.bias.copy_(-torch.tensor(mean, dtype=torch.float32) / std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))


class DetectorOutputs(nn.Module):
    """One 0..1 image batch of size 1 -> (boxes xyxy in input pixels, scores, class index)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(list(images))[0]
        # torchvision labels count the background as 0; export class indices.
        return out["boxes"], out["scores"], out["labels"] - 1


def _onnx_export(module: nn.Module, example: torch.Tensor, input_names: list[str], output_names: list[str], dynamic_axes: dict | None) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns about every traced shape computation in
        # torchvision's detection code; those are expected for a fixed input size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buf,
            opset_version=settings.ONNX_OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            **compat.onnx_export_kwargs(),
        )
    return buf.getvalue()


def _normalise_graph(data: bytes) -> tuple[bytes, str | None]:
    """Check the graph and replace Identity nodes that merely alias an initializer.

    torch 1.13 deduplicates equal constants (e.g. zero biases) by emitting Identity
    nodes over one initializer; OpenCV's importer rejects those. Copying the constant
    under each alias is the same computation, so the shipped file is the one we verify.
    Returns (bytes, None) or (original bytes, reason) when the onnx package is missing.
    """
    try:
        import onnx
    except ImportError as exc:
        return data, f"onnx package not importable ({exc}); graph not checked"
    model = onnx.load_from_string(data)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            alias = onnx.TensorProto()
            alias.CopyFrom(inits[node.input[0]])
            alias.name = node.output[0]
            graph.initializer.append(alias)
            inits[alias.name] = alias
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    onnx.checker.check_model(model)
    return model.SerializeToString(), None


def _run_onnxruntime(path: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> tuple[list[np.ndarray], str]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(outputs, feeds), f"onnxruntime {ort.__version__}"


def _pin_batch(path: str, batch: int) -> str:
    import onnx

    model = onnx.load(path)
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_param:
            dim.ClearField("dim_param")
            dim.dim_value = batch
    fd, pinned = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    onnx.save(model, pinned)
    return pinned


def _run_opencv(path: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> tuple[list[np.ndarray], str]:
    import cv2

    # Its importer logs every unsupported node to stderr; the reason is in the exception.
    # 0 is LOG_LEVEL_SILENT (the constant is not exported by every build).
    if hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)

    (x,) = feeds.values()
    try:
        net = cv2.dnn.readNetFromONNX(path)
        net.setInput(x)
        return list(net.forward(outputs)), f"opencv-dnn {cv2.__version__}"
    except cv2.error as first:
        # OpenCV 4.6 cannot infer shapes through symbolic batch sizes in some graphs
        # (mobilenet, efficientnet); the same graph with the batch fixed still runs.
        try:
            pinned = _pin_batch(path, x.shape[0])
        except Exception:
            raise first from None
        try:
            net = cv2.dnn.readNetFromONNX(pinned)
            net.setInput(x)
            return list(net.forward(outputs)), f"opencv-dnn {cv2.__version__} (batch dimension pinned to {x.shape[0]})"
        finally:
            os.remove(pinned)


def _error_summary(exc: BaseException) -> str:
    lines = [ln.strip(" >") for ln in str(exc).splitlines() if ln.strip(" >")]
    errors = [ln for ln in lines if "error" in ln.lower()]
    text = (errors or lines or [type(exc).__name__])[-1]
    return text[:300]


def run_onnx(path: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> tuple[list[np.ndarray] | None, str | None, list[str]]:
    """Outputs from the first runtime that runs the graph; (None, None, reasons) if none can."""
    reasons = []
    for runner in (_run_onnxruntime, _run_opencv):
        try:
            result, runtime = runner(path, feeds, outputs)
            return result, runtime, reasons
        except ImportError as exc:
            reasons.append(f"{runner.__name__[5:]}: not installed ({exc})")
        except Exception as exc:
            reasons.append(f"{runner.__name__[5:]}: cannot run this graph ({_error_summary(exc)})")
    return None, None, reasons


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _tolerance(reference: Sequence[np.ndarray]) -> float:
    peak = max((float(np.abs(r).max()) for r in reference if r.size), default=0.0)
    return settings.ONNX_RTOL * max(1.0, peak)


def export_classifier(model: nn.Module, image_size: int, mean: Sequence[float], std: Sequence[float], path: str, example: torch.Tensor | None = None) -> dict[str, Any]:
    wrapper = NormalizedClassifier(model, mean, std).eval().float()
    if example is None:
        example = torch.rand(settings.ONNX_VERIFY_BATCH, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    data = _onnx_export(wrapper, example, ["images"], ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}})
    data, note = _normalise_graph(data)
    _write(path, data)
    with torch.no_grad():
        reference = [wrapper(example).numpy()]
    return _verify(path, {"images": example.numpy()}, ["logits"], reference, note, dynamic_batch=True)


def export_detector(model: nn.Module, image_size: int, path: str, example: torch.Tensor | None = None) -> dict[str, Any]:
    wrapper = DetectorOutputs(model).eval().float()
    if example is None:
        example = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    # Detectors return a variable number of boxes per image, so the graph takes one image.
    data = _onnx_export(wrapper, example, ["images"], ["boxes", "scores", "labels"], None)
    data, note = _normalise_graph(data)
    _write(path, data)
    with torch.no_grad():
        reference = [t.numpy() for t in wrapper(example)]
    return _verify(path, {"images": example.numpy()}, ["boxes", "scores", "labels"], reference, note, dynamic_batch=False, detections=True)


def _match_tied_detections(got: list[np.ndarray], reference: list[np.ndarray]) -> list[np.ndarray]:
    """`got` (boxes, scores, labels) reordered to line up with `reference`.

    Detections whose scores tie (an untrained detector has many) may come out of NMS/top-k in
    either order; a runtime that orders them differently has not computed anything different.
    Each reference detection takes the closest unmatched detection with the same label and a
    score within the scores' tolerance; if any finds none, the outputs are compared as given,
    so the comparison after this still fails wherever they really differ.
    """
    boxes, scores, labels = (np.asarray(a) for a in got)
    rboxes, rscores, rlabels = reference
    tol = _tolerance([rscores])
    n = len(rscores)
    if boxes.shape != rboxes.shape or scores.shape != rscores.shape or labels.shape != rlabels.shape:
        return got
    order = list(range(n))
    taken = np.zeros(n, dtype=bool)
    for i in range(n):
        candidates = np.where((~taken) & (labels.astype(rlabels.dtype) == rlabels[i]) & (np.abs(scores.astype(np.float64) - rscores[i]) <= tol))[0]
        if len(candidates) == 0:
            continue
        dist = np.abs(boxes[candidates].astype(np.float64) - rboxes[i].astype(np.float64)).max(axis=1)
        j = int(candidates[int(np.argmin(dist))])
        order[i] = j
        taken[j] = True
    if sorted(order) != list(range(n)):
        return got  # some detection went unmatched: compare as given
    return [boxes[order], scores[order], labels[order]]


def _verify(
    path: str,
    feeds: dict[str, np.ndarray],
    outputs: list[str],
    reference: list[np.ndarray],
    note: str | None,
    dynamic_batch: bool,
    detections: bool = False,
) -> dict[str, Any]:
    info: dict[str, Any] = {"opset": settings.ONNX_OPSET, "dynamic_batch": dynamic_batch}
    got, runtime, reasons = run_onnx(path, feeds, outputs)
    if got is None:
        info.update(verified=False, runtime=None, max_abs_diff=None, note="; ".join(([note] if note else []) + reasons))
        return info
    if detections:
        got = _match_tied_detections(list(got), reference)
    tol = _tolerance([r for r in reference if not np.issubdtype(r.dtype, np.integer)])
    diff = 0.0
    problems = []
    for name, g, r in zip(outputs, got, reference):
        g = np.asarray(g)
        if g.shape != r.shape:
            problems.append(f"{name}: shape {g.shape} from {runtime}, {r.shape} from torch")
            continue
        if r.size:
            if np.issubdtype(r.dtype, np.integer):
                if not np.array_equal(g.astype(r.dtype), r):
                    problems.append(f"{name}: values differ")
            else:
                diff = max(diff, float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()))
    if diff > tol:
        problems.append(f"max_abs_diff {diff:.3g} above tolerance {tol:.3g}")
    info.update(
        verified=not problems,
        runtime=runtime,
        max_abs_diff=diff,
        note="; ".join(([note] if note else []) + problems) or None,
    )
    return info


def match_detections(got: Sequence[np.ndarray], reference: Sequence[np.ndarray], conf: float, max_det: int) -> list[str]:
    """Problems (empty: none) comparing two detection lists (boxes, scores, labels) selected
    from outputs that differ by float rounding.

    Each detection must have a partner in the other list with the same label, a score within
    the scores' tolerance and a box within the boxes' tolerance, except those scoring within
    that tolerance of the selection threshold, `conf` or, in a list cut at `max_det`, its lowest
    score: rounding may put such a detection on either side of it, so one list may hold it and
    the other not."""
    gb, gs, gl = (np.asarray(a) for a in got)
    rb, rs, rl = (np.asarray(a) for a in reference)
    score_tol = _tolerance([rs])
    box_tol = _tolerance([rb])
    floor = max([conf] + [float(x.min()) for x in (gs, rs) if len(x) >= max_det])
    taken = np.zeros(len(gs), dtype=bool)
    matched_ref = np.zeros(len(rs), dtype=bool)
    for i in range(len(rs)):
        candidates = np.where((~taken) & (gl == rl[i]) & (np.abs(gs.astype(np.float64) - rs[i]) <= score_tol))[0]
        if len(candidates):
            dist = np.abs(gb[candidates].astype(np.float64) - rb[i]).max(axis=1)
            j = int(candidates[int(np.argmin(dist))])
            if dist.min() <= box_tol:
                taken[j] = matched_ref[i] = True
    problems = []
    missing = int(((~matched_ref) & (rs > floor + score_tol)).sum())
    extra = int(((~taken) & (gs > floor + score_tol)).sum())
    if missing:
        problems.append(f"detections: {missing} of torch's {len(rs)} have no match from the runtime")
    if extra:
        problems.append(f"detections: {extra} of the runtime's {len(gs)} have no match in torch's")
    return problems


def export_dense_detector(graph: nn.Module, example: torch.Tensor, path: str, postprocess: Any, conf: float, max_det: int) -> dict[str, Any]:
    """A detector exported before NMS: `graph(images) -> (boxes [1, A, 4], scores [1, A, C])`.

    NMS stays after the graph, in `postprocess(boxes [A, 4], scores [A, C]) -> (boxes, scores,
    labels)` (the consumer's code, shipped in Python as the reference): the graph is then only
    convolutions and element-wise ops, which every runtime runs (OpenCV's dnn here, TensorRT,
    onnxruntime-web), and the consumer picks its own thresholds. Verification checks both: the
    raw outputs within tolerance, and the detections `postprocess` selects from each runtime's
    outputs, matched by `match_detections` (`conf`, `max_det`: the score threshold and the cap
    of `postprocess`)."""
    graph = graph.eval().float()
    data = _onnx_export(graph, example, ["images"], ["boxes", "scores"], None)
    data, note = _normalise_graph(data)
    _write(path, data)
    with torch.no_grad():
        reference = [t.numpy() for t in graph(example)]
    info = _verify(path, {"images": example.numpy()}, ["boxes", "scores"], reference, note, dynamic_batch=False)
    info["note"] = "; ".join(p for p in ["outputs before NMS (boxes, scores); NMS runs after the graph", info["note"]] if p)
    if not info["verified"]:
        return info
    got, _runtime, _ = run_onnx(path, {"images": example.numpy()}, ["boxes", "scores"])
    got_boxes, got_scores = np.asarray(got[0])[0], np.asarray(got[1])[0]
    *ref_dets, cells = postprocess(reference[0][0], reference[1][0], return_cells=True)
    problems = match_detections(postprocess(got_boxes, got_scores), ref_dets, conf, max_det)
    if not problems:
        info["note"] += f"; the {len(ref_dets[1])} detections after NMS match"
        return info
    # Greedy NMS is discontinuous: where boxes overlap with scores equal within rounding (an
    # untrained model has many such), which of them survives can flip, and then others flip
    # in turn. The raw outputs matched above, so compare the runtime's outputs at the cells
    # torch's NMS selected: different values there would be a real difference.
    at = [got_boxes[cells], got_scores[cells, ref_dets[2]]]
    diff = max((float(np.abs(a.astype(np.float64) - r).max()) for a, r in zip(at, ref_dets[:2]) if r.size), default=0.0)
    if diff <= _tolerance(ref_dets[:2]):
        info["note"] += (
            f"; the runtime's own NMS selection differs among boxes tied within rounding ({problems[0]}); "
            f"at the {len(cells)} cells torch's NMS selected its detections equal torch's (max diff {diff:.3g})"
        )
    else:
        info["verified"] = False
        info["note"] = "; ".join([info["note"], *problems, f"detections at torch's selected cells differ by {diff:.3g}"])
    return info
