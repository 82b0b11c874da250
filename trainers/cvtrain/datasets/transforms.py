"""Decoding and augmentation, run inside DataLoader workers.

Every random choice draws from a generator seeded by (seed, epoch, sample index), so a
sample looks the same whichever worker decodes it and however many workers there are,
and a resumed run sees exactly the augmentations the uninterrupted run saw.

Outputs are uint8 CHW tensors: a float32 image is 4x the bytes through the worker
queues and pinned memory (measured 3x slower end to end); conversion to float and
normalisation happen on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageStat

from .. import settings

# Pillow >= 9.1 names these in enums; the module-level aliases are not in every version.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
FLIP_LEFT_RIGHT = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def decode(path: str, target_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """RGB image and its original (width, height).

    JPEG `draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is much larger
    than the model input: the same pixels we would get after downscaling, at a fraction of
    the decode cost.
    """
    img = Image.open(path)
    orig = img.size
    if img.format == "JPEG" and max(orig) > 2 * target_side:
        img.draft("RGB", (target_side, target_side))
    img = img.convert("RGB")
    return img, orig


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# Luma weights of PIL's RGB -> "L" conversion (ITU-R 601-2), which ImageEnhance.Contrast and
# ImageEnhance.Color blend towards.
_LUMA = np.array([0.299, 0.587, 0.114])


def color_jitter(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast and saturation, each scaled by a factor in [1-s, 1+s].

    The three are the blends of PIL's ImageEnhance: towards black (b), towards the image's mean
    grey m (c), towards the pixel's own grey L(x) (s). Each is affine in RGB and, unclipped, they
    commute (scaling moves m with the image; saturation keeps every pixel's grey), so in any
    order they make  x -> b*c*(s*x + (1-s)*L(x)) + b*(1-c)*m,  one 3x3 matrix plus an offset
    that PIL applies in a single C pass (`convert` with a matrix), clipping and rounding once.
    Three ImageEnhance calls, each a full blend with its own intermediate image, cost 2.3x as
    much on a 224 px image on the dev machine (0.76 ms vs 0.33, bench/loader_bench.py), in the
    DataLoader workers that compete with the training process for CPU.
    """
    lo, hi = 1.0 - strength, 1.0 + strength
    b, c, s = (float(v) for v in rng.uniform(lo, hi, size=3))
    mean_grey = float(_LUMA @ np.asarray(ImageStat.Stat(img).mean[:3]))
    matrix = b * c * (s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _LUMA))
    offset = np.full((3, 1), b * (1.0 - c) * mean_grey)
    return img.convert("RGB", tuple(float(v) for v in np.hstack([matrix, offset]).ravel()))


def letterbox_detection(
    img: Image.Image,
    boxes: np.ndarray,
    side: int,
    rng: np.random.Generator | None,
    augment: bool,
) -> tuple[Image.Image, np.ndarray, tuple[float, float], np.ndarray]:
    """Fit `img` (boxes in its pixel frame) into a side x side canvas.

    Without augmentation the long side becomes `side`, padded bottom/right, so boxes only
    scale. With it, the image is also zoomed by a scale-jitter factor and placed at a random
    offset (cropped when larger than the canvas), then flipped and colour-jittered.
    Returns (canvas, boxes in canvas pixels, (x, y) scale applied, keep mask over input boxes).
    """
    w, h = img.size
    scale = side / max(w, h)
    ox = oy = 0
    if augment and rng is not None:
        scale *= float(rng.uniform(*settings.SCALE_JITTER))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((nw, nh), BILINEAR)
    if augment and rng is not None:
        # Random placement: positive offsets pad, negative ones crop.
        ox = int(rng.integers(min(0, side - nw), max(0, side - nw) + 1))
        oy = int(rng.integers(min(0, side - nh), max(0, side - nh) + 1))
    canvas = Image.new("RGB", (side, side), (settings.PAD_VALUE,) * 3)
    crop = resized.crop((max(0, -ox), max(0, -oy), min(nw, side - ox), min(nh, side - oy)))
    canvas.paste(crop, (max(0, ox), max(0, oy)))
    sx, sy = nw / w, nh / h
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * sx + ox
    out[:, [1, 3]] = out[:, [1, 3]] * sy + oy
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, min(side, ox + nw))
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, min(side, oy + nh))
    keep = ((out[:, 2] - out[:, 0]) >= settings.MIN_BOX_SIDE) & ((out[:, 3] - out[:, 1]) >= settings.MIN_BOX_SIDE)
    if augment and rng is not None:
        if rng.random() < settings.HFLIP_PROB:
            canvas = canvas.transpose(FLIP_LEFT_RIGHT)
            x1 = side - out[:, 2]
            x2 = side - out[:, 0]
            out[:, 0], out[:, 2] = x1, x2
        canvas = color_jitter(canvas, rng, settings.COLOR_JITTER)
    return canvas, out, (sx, sy), keep


def resize_classification(img: Image.Image, side: int, rng: np.random.Generator | None, augment: bool) -> Image.Image:
    """Square side x side input. Augmented: zoom in (random crop) or out (random pad),
    flip, colour jitter."""
    if augment and rng is not None:
        zoom = float(rng.uniform(*settings.SCALE_JITTER))
        w, h = img.size
        if zoom >= 1.0:
            cw, ch = max(1, round(w / zoom)), max(1, round(h / zoom))
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            img = img.crop((x, y, x + cw, y + ch)).resize((side, side), BILINEAR)
        else:
            inner = max(1, round(side * zoom))
            small = img.resize((inner, inner), BILINEAR)
            img = Image.new("RGB", (side, side), (settings.PAD_VALUE,) * 3)
            img.paste(small, (int(rng.integers(0, side - inner + 1)), int(rng.integers(0, side - inner + 1))))
        if rng.random() < settings.HFLIP_PROB:
            img = img.transpose(FLIP_LEFT_RIGHT)
        return color_jitter(img, rng, settings.COLOR_JITTER)
    return img.resize((side, side), BILINEAR)
