"""Samples a run cannot use: bad labels found when a split is read, images that fail to
decode while training or validating. Each is skipped with a `warning` event; past
`max_corrupt_fraction` of a split the run fails with DatasetError instead of training on
what is left. Checkpoints carry what was seen (checkpointing.py), so a resumed run reports
the same counts.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import DatasetError
from .formats import SplitIndex


class SampleProblems:
    def __init__(self, events: Any, max_corrupt_fraction: float):
        self.events = events
        self.max_corrupt_fraction = max_corrupt_fraction
        # split -> dataset index -> "path: message" of each image that did not decode.
        self.bad: dict[str, dict[int, str]] = {"train": {}, "val": {}}
        # split -> how many of them a warning has announced.
        self.reported = {"train": 0, "val": 0}

    def restore(self, bad: dict[str, dict[Any, str]]) -> None:
        """Take the table a checkpoint saved; all of it was announced before it was saved."""
        self.bad = {k: {int(i): m for i, m in v.items()} for k, v in bad.items()}
        self.reported = {k: len(v) for k, v in self.bad.items()}

    def report_index(self, split: str, index: SplitIndex) -> None:
        """What reading `split` found wrong: one warning, DatasetError past the limit."""
        if not index.problems:
            return
        shown = "; ".join(
            f"{p.path}{':' + str(p.line) if p.line else ''}: {p.message}" for p in index.problems[:3]
        )
        more = f" (and {len(index.problems) - 3} more)" if len(index.problems) > 3 else ""
        if index.dropped:
            self.events.emit(
                "warning",
                code="skipped_labels",
                message=f"{split}: skipped {index.dropped} of {index.total} images with bad labels: {shown}{more}",
                count=index.dropped,
            )
        else:
            self.events.emit(
                "warning",
                code="dataset_problems",
                message=f"{split}: {len(index.problems)} problems: {shown}{more}",
                count=len(index.problems),
            )
        if index.total and index.dropped / index.total > self.max_corrupt_fraction:
            raise DatasetError(
                f"{split}: {index.dropped} of {index.total} images have bad labels, more than "
                f"max_corrupt_fraction={self.max_corrupt_fraction}: {shown}{more}"
            )

    def record(self, split: str, bad: list[tuple[int, str, str]], dataset_size: int) -> None:
        """A batch's undecodable images (index, path, message), each logged once."""
        table = self.bad[split]
        for index, path, message in bad:
            if index not in table:
                table[index] = f"{path}: {message}"
                print(f"cvtrain: skipping corrupt image {path}: {message}", file=sys.stderr)
        if len(table) / max(1, dataset_size) > self.max_corrupt_fraction:
            self.report(split)
            raise DatasetError(
                f"{split}: {len(table)} of {dataset_size} images do not decode, more than "
                f"max_corrupt_fraction={self.max_corrupt_fraction}; first: {next(iter(table.values()))}"
            )

    def report(self, split: str) -> None:
        """A `corrupt_images` warning when more images failed than the last one announced."""
        table = self.bad[split]
        if len(table) > self.reported[split]:
            self.reported[split] = len(table)
            first = list(table.values())[:3]
            self.events.emit(
                "warning",
                code="corrupt_images",
                message=f"{split}: skipped {len(table)} images that do not decode: " + "; ".join(first),
                count=len(table),
            )
