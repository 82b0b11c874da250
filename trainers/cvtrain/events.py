"""The trainer event protocol (version 1): one JSON object per line, flushed at once.

The contract is schema/trainer-events.schema.json; tests validate every event emitted
here against it. stdout/stderr stay human logs; events go to `--events PATH` (appended,
so a resumed run continues the same file) or `--events fd:N` (a pipe the gpu-node passes).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from . import settings


def utc_timestamp() -> str:
    """ISO-8601 UTC with milliseconds and a Z suffix, e.g. 2025-01-31T12:00:00.123Z."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity and JSON.parse rejects them: map them to null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class EventEmitter:
    """Writes protocol events. `target` is None (events kept in memory only), a path, or fd:N."""

    def __init__(self, target: str | None = None, session: str = "local", keep: bool = False):
        self.session = session
        self.keep = keep
        self.events: list[dict[str, Any]] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self._fh = None
        self.target = target
        if target is None:
            return
        if target.startswith("fd:"):
            fd = int(target[3:])
            # closefd=False: the descriptor belongs to whoever passed it to us.
            self._fh = os.fdopen(fd, "w", encoding="utf-8", buffering=1, closefd=False)
        else:
            parent = os.path.dirname(os.path.abspath(target))
            os.makedirs(parent, exist_ok=True)
            self._fh = open(target, "a", encoding="utf-8", buffering=1)

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"v": settings.EVENT_PROTOCOL_VERSION, "type": type_, "ts": utc_timestamp(), "session": self.session}
        event.update(_finite(fields))
        line = json.dumps(event, separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self.keep:
                self.events.append(event)
            if self._fh is not None:
                try:
                    self._fh.write(line + "\n")
                    self._fh.flush()
                except (BrokenPipeError, OSError) as exc:
                    # The reader went away (gpu-node restarted): keep training, the checkpoint
                    # still lands on disk; say so once on stderr.
                    print(f"cvtrain: event sink {self.target} failed ({exc}); events are no longer written", file=sys.stderr)
                    self._fh = None
        for listener in list(self.listeners):
            listener(event)
        return event

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None
