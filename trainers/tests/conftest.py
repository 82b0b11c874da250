"""Puts trainers/ on sys.path: the package runs from source, without an install step."""

import sys
from pathlib import Path

_TRAINERS = str(Path(__file__).resolve().parents[1])
if _TRAINERS not in sys.path:
    sys.path.insert(0, _TRAINERS)
