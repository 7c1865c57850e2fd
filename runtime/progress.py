"""Progress lines for long work (builds, calibration, evaluation, benchmarks): one line each, on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(f"[distilrt] {message}", file=sys.stderr, flush=True)

