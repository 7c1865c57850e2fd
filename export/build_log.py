"""What a build says and where it says it.

- Library chatter (ONNX Runtime's calibrator prints, its quantizer's logging warnings, transformers' "Device set
  to use cpu", torch's export warnings) goes to the build log, artifacts/<checkpoint>/build.log, not to the
  terminal: stdout stays the command's result.
- distilrt's own progress lines go to stderr as before, and into the build log too, so the log reads in order.
- Within a long stage (calibration, the int8 search's per-layer sensitivity), ``Steps`` shows how far it is:
  a tqdm bar where stderr is a terminal, plain progress lines (every 10 s, and the last) where it is not (CI
  logs, pipes).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from distilrt.export.checkpoint import checkpoint_name
from distilrt.progress import Progress, print_progress

LOG_FILE = "build.log"
PLAIN_LINE_SECONDS = 10.0  # where stderr is not a terminal: a progress line at most this often within a stage


def build_log_path(out_dir: Path, checkpoint: str) -> Path:
    """artifacts/<checkpoint>/build.log: beside the checkpoint's bundles and build-summary.json."""
    return Path(out_dir) / checkpoint_name(checkpoint) / LOG_FILE


def to_terminal(progress: Progress) -> bool:
    """Whether ``progress`` prints on stderr and stderr is a terminal (then a progress bar may redraw there)."""
    printer = getattr(progress, "prints_to", progress)
    return printer is print_progress and sys.stderr.isatty()


@contextlib.contextmanager
def build_log(path: Path, progress: Progress = print_progress, *, append: bool = False) -> Iterator[Progress]:
    """Send library output to ``path`` for the duration; yields the progress function to use inside, which also
    writes each line to the log. The file is made on the first line written, so a build that fails before
    its first step (a checkpoint that does not exist) leaves no artifacts directory behind."""
    with _LazyLog(path, progress, append) as log:
        def logged(message: str) -> None:
            log.write(f"[distilrt] {message}\n")
            progress(message)

        logged.prints_to = getattr(progress, "prints_to", progress)
        with contextlib.redirect_stdout(log), _logging_to(log), _warnings_to(log):
            yield logged


class _LazyLog:
    """A text stream that opens its file on the first write (and says where on ``progress``)."""

    def __init__(self, path: Path, progress: Progress, append: bool):
        self.path, self._progress, self._append = Path(path), progress, append
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if self._append else "w", encoding="utf-8", buffering=1)
            self._file.write(f"# distilrt build log, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
            self._progress(f"build log (library output): {self.path}")
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def __enter__(self) -> _LazyLog:
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


@contextlib.contextmanager
def _logging_to(log: TextIO) -> Iterator[None]:
    """Every logger that writes to the terminal (the root logger, transformers' own handler) writes to ``log``
    instead; their handlers and levels come back afterwards. The root logger gets a handler, so that
    ``logging.warning`` (ONNX Runtime's quantizer) does not call basicConfig and add a stderr handler for good."""
    _configure_transformers_logging()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger) and _writes_to_terminal(logger)]
    saved = [(logger, logger.handlers[:]) for logger in loggers]
    for logger in loggers:
        logger.handlers = [h for h in logger.handlers if not _is_terminal_handler(h)] + [handler]
    try:
        yield
    finally:
        for logger, handlers in saved:
            logger.handlers = handlers


def _configure_transformers_logging() -> None:
    """transformers adds its stderr handler on its first log call; have it added now, so it is redirected too."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.get_logger("transformers")


def _writes_to_terminal(logger: logging.Logger) -> bool:
    return any(_is_terminal_handler(h) for h in logger.handlers)


def _is_terminal_handler(handler: logging.Handler) -> bool:
    # Exactly StreamHandler: file handlers and test-capture handlers are subclasses and stay.
    return type(handler) is logging.StreamHandler


@contextlib.contextmanager
def _warnings_to(log: TextIO) -> Iterator[None]:
    with warnings.catch_warnings():
        def show(message, category, filename, lineno, file=None, line=None):
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


class Steps:
    """How far a long stage is: ``advance()`` after each of ``total`` steps, ``close()`` at the end (or use it as
    a context manager)."""

    def __init__(self, progress: Progress, label: str, total: int, unit: str = "steps", *,
                 every_seconds: float = PLAIN_LINE_SECONDS):
        self.progress, self.label, self.total, self.unit = progress, label, max(int(total), 0), unit
        self.done = 0
        self.every_seconds = every_seconds
        self._last_line = time.monotonic()
        self._bar = None
        if self.total and to_terminal(progress):
            from tqdm.auto import tqdm  # transformers' own dependency: always there at build time

            self._bar = tqdm(total=self.total, desc=f"[distilrt] {label}", unit=f" {unit}", leave=False,
                             file=sys.stderr, dynamic_ncols=True)

    def advance(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        if self._bar is not None:
            self._bar.update(count)
            return
        # Plain lines at most every few seconds, and the last: a CI log shows a minutes-long stage moving
        # without a line per step.
        now = time.monotonic()
        if self.total and (self.done == self.total or now - self._last_line >= self.every_seconds):
            self.progress(f"  {self.label}: {self.done}/{self.total} {self.unit}")
            self._last_line = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
