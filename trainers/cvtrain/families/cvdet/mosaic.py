"""Mosaic augmentation: four training images tiled around a random centre into one canvas.

Stateless like the rest of the augmentation: the partner images, the centre and every tile's
scale draw from a generator seeded by (seed, epoch, index), so a resumed run (and any number
of DataLoader workers) sees exactly the mosaics of the uninterrupted run, and nothing about
the mosaic needs to be in a checkpoint.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ... import settings
from ...datasets.formats import DetSample
from ...datasets.loading import Corrupt, DetectionDataset, _key
from ...datasets.transforms import BILINEAR, FLIP_LEFT_RIGHT, color_jitter, decode, to_tensor

# Distinct from the letterbox augmentation's stream of the same (seed, epoch, index).
_STREAM = 0x4D05


class MosaicDetectionDataset(DetectionDataset):
    """A DetectionDataset whose training items are mosaics during epochs < `mosaic_epochs`
    (with probability CVDET_MOSAIC_PROB), and the usual letterbox augmentation after."""

    def __init__(self, samples: Sequence[DetSample], image_size: int, train: bool, augment: bool, seed: int, mosaic_epochs: int):
        super().__init__(samples, image_size, train, augment, seed)
        self.mosaic_epochs = mosaic_epochs

    def __getitem__(self, key: Any) -> Any:
        index, epoch = _key(key)
        if not self.augment or epoch >= self.mosaic_epochs:
            return super().__getitem__(key)
        rng = np.random.default_rng([self.seed, epoch, index, _STREAM])
        if rng.random() >= settings.CVDET_MOSAIC_PROB:
            return super().__getitem__(key)
        return self._mosaic(index, rng)

    def _load(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        """Decoded image, its boxes (x1 y1 x2 y2 in its pixels) and 0-based labels, crowd
        regions left out (they are not objects to learn)."""
        s = self.samples[index]
        img, (ow, oh) = decode(s.path, self.image_size)
        if s.normalized:
            cx, cy, bw, bh = s.boxes.T if len(s.boxes) else (np.zeros(0, np.float32),) * 4
            boxes = np.stack([(cx - bw / 2) * ow, (cy - bh / 2) * oh, (cx + bw / 2) * ow, (cy + bh / 2) * oh], axis=1)
        else:
            boxes = s.boxes.copy()
        dw, dh = img.size
        boxes = boxes.astype(np.float32).reshape(-1, 4) * np.array([dw / ow, dh / oh, dw / ow, dh / oh], dtype=np.float32)
        keep = s.iscrowd == 0
        return img, boxes[keep], s.labels[keep]

    def _mosaic(self, index: int, rng: np.random.Generator) -> Any:
        side = self.image_size
        indices = [index] + [int(i) for i in rng.integers(0, len(self.samples), size=3)]
        lo, hi = settings.CVDET_MOSAIC_CENTRE
        xc, yc = (int(round(v * side)) for v in rng.uniform(lo, hi, size=2))
        canvas = Image.new("RGB", (side, side), (settings.PAD_VALUE,) * 3)
        all_boxes, all_labels = [], []
        for tile, i in enumerate(indices):
            try:
                img, boxes, labels = self._load(i)
            except Exception as exc:  # PIL raises many types for broken files
                if i == index:
                    return Corrupt(index, self.samples[index].path, f"{type(exc).__name__}: {exc}")
                continue  # a broken partner leaves its quadrant empty; it is counted when drawn itself
            w, h = img.size
            scale = side / max(w, h) * float(rng.uniform(*settings.CVDET_MOSAIC_TILE_SCALE))
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            # Tiles meet at the centre: top-left, top-right, bottom-left, bottom-right.
            x1 = xc - nw if tile in (0, 2) else xc
            y1 = yc - nh if tile in (0, 1) else yc
            resized = img.resize((nw, nh), BILINEAR)
            crop = resized.crop((max(0, -x1), max(0, -y1), min(nw, side - x1), min(nh, side - y1)))
            if crop.size[0] > 0 and crop.size[1] > 0:
                canvas.paste(crop, (max(0, x1), max(0, y1)))
            b = boxes * np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32) + np.array([x1, y1, x1, y1], dtype=np.float32)
            # Clip to the tile's visible part (the canvas and the tile itself).
            vx1, vy1, vx2, vy2 = max(0, x1), max(0, y1), min(side, x1 + nw), min(side, y1 + nh)
            clipped = b.copy()
            clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(vx1, vx2)
            clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(vy1, vy2)
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
            ok = (cw >= settings.MIN_BOX_SIDE) & (ch >= settings.MIN_BOX_SIDE) & (cw * ch >= settings.CVDET_MOSAIC_MIN_VISIBLE * np.maximum(area, 1e-9))
            all_boxes.append(clipped[ok])
            all_labels.append(labels[ok])
        boxes = np.concatenate(all_boxes).astype(np.float32) if all_boxes else np.zeros((0, 4), np.float32)
        labels = np.concatenate(all_labels).astype(np.int64) if all_labels else np.zeros(0, np.int64)
        if rng.random() < settings.HFLIP_PROB:
            canvas = canvas.transpose(FLIP_LEFT_RIGHT)
            boxes[:, [0, 2]] = side - boxes[:, [2, 0]]
        canvas = color_jitter(canvas, rng, settings.COLOR_JITTER)
        return {
            "image": to_tensor(canvas),
            "boxes": torch.from_numpy(boxes).reshape(-1, 4),
            # torchvision's convention, which the rest of the detection task keeps: 0 is background.
            "labels": torch.from_numpy(labels + 1),
        }
