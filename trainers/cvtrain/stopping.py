"""Catches SIGTERM/SIGINT from the first moment of a `train` command.

Importing torch and reading a dataset take seconds; a stop request in that window must
not kill the process without an event. The CLI installs this recorder first (it imports
nothing heavy); the trainer adopts a recorded signal as its stop request and stops at
the first step boundary with a resumable checkpoint.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_received: list[str] = []


def _record(signum: int, _frame: Any) -> None:
    _received.append(signal.Signals(signum).name)


def install_early_handlers() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _record)
        signal.signal(signal.SIGINT, _record)


def pending_signal() -> str | None:
    return _received[0] if _received else None
