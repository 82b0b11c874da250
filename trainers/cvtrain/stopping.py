"""SIGTERM/SIGINT become a stop request: caught from the first moment of a `train` command,
then routed to the trainer while it runs.

Importing torch and reading a dataset take seconds; a stop request in that window must
not kill the process without an event. The CLI installs the early recorder first (this
module imports nothing heavy); `route_stop_signals` hands the trainer every later signal and
one recorded before it, and the trainer stops at the first step boundary with a resumable
checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: list[str] = []


def _record(signum: int, _frame: Any) -> None:
    _received.append(signal.Signals(signum).name)


def _install(handler: Callable[[int, Any], None]) -> dict[int, Any] | None:
    """Route the stop signals to `handler`; returns the handlers it replaced, or None off
    the main thread (where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    replaced: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        replaced[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return replaced


def install_early_handlers() -> None:
    _install(_record)


def pending_signal() -> str | None:
    return _received[0] if _received else None


def route_stop_signals(request_stop: Callable[[str], bool]) -> Callable[[], None]:
    """Call `request_stop(signal name)` for each SIGTERM/SIGINT, and now for one the early
    handlers recorded; it returns True when that request is the run's first (then a line
    goes to stderr). Returns the function that puts the previous handlers back."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if request_stop(name):
            print(f"cvtrain: {name} received; finishing the step, then checkpointing", file=sys.stderr, flush=True)

    replaced = _install(handler)
    if replaced is None:
        return lambda: None
    early = pending_signal()
    if early and request_stop(early):
        print(f"cvtrain: {early} received during start-up; stopping at the first step boundary", file=sys.stderr, flush=True)

    def restore() -> None:
        for sig, old in replaced.items():
            signal.signal(sig, old)

    return restore
