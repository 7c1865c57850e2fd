"""`distilrt demo`: the whole path, offline, on stand-ins of the five seed checkpoints (RANDOM weights).

Each stand-in has its checkpoint's real config and tokenizer, so export, verification and the runtime do the
same work as on the published weights; only the answers are meaningless.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions, BuildResult, build_fp32
from distilrt.export.build_log import build_log, build_log_path
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.progress import Progress, print_progress

SUMMARY_FILE = "summary.md"


@dataclass(frozen=True)
class DemoRow:
    checkpoint: str
    task: str
    architecture: str
    onnx_mb: float
    max_abs_diff_vs_torch: float
    task_matched: str
    max_score_diff: float
    seconds: float
    bundle: Path


def run_demo(out_dir: Path, *, tiny: bool = False, checkpoints: tuple[str, ...] = tuple(SEED_CHECKPOINTS),
             options: BuildOptions | None = None, progress: Progress = print_progress,
             keep_checkpoints: Path | None = None) -> list[DemoRow]:
    """Build each stand-in's fp32 bundle into ``out_dir``. The stand-in checkpoints are made in a temp dir and
    deleted, unless ``keep_checkpoints`` names a directory to keep them in (then the manifests' source paths
    exist, and `distilrt build DIR/<checkpoint>` can be tried offline)."""
    rows = []
    with _checkpoints_dir(keep_checkpoints) as scratch:
        for name in checkpoints:
            progress(f"making a {'tiny' if tiny else 'full-size'} RANDOM-weight stand-in for {name}")
            directory = make_random_checkpoint(name, scratch / name, tiny=tiny)
            with build_log(build_log_path(out_dir, name), progress) as logged:
                result = build_fp32(str(directory), replace(options or BuildOptions(), out_dir=out_dir), logged)
            rows.append(_row(name, result))
    return rows


@contextlib.contextmanager
def _checkpoints_dir(keep: Path | None):
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()  # manifests record where the checkpoint is: an absolute path stays valid
        return
    with tempfile.TemporaryDirectory(prefix="distilrt-demo-") as scratch:
        yield Path(scratch)


def write_summary(rows: list[DemoRow], out_dir: Path, *, tiny: bool) -> Path:
    """The demo's table as Markdown beside its bundles (out_dir/summary.md)."""
    path = Path(out_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "tiny (2-layer)" if tiny else "full-size"
    text = (f"# distilrt demo: {kind} RANDOM-weight stand-ins\n\n"
            "Real configs and tokenizers, random weights: the figures check export, verification and the runtime; "
            "the answers are meaningless.\n\n" + format_table(rows) + "\n")
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)
    return path


def _row(name: str, result: BuildResult) -> DemoRow:
    verification = result.manifest.verification
    worst = verification["tensors"]["worst"]
    task = verification["task"]
    return DemoRow(
        checkpoint=name,
        task=result.task,
        architecture=result.manifest.architecture,
        onnx_mb=result.onnx_path.stat().st_size / 2**20,
        max_abs_diff_vs_torch=max(w["max_abs_diff"] for w in worst.values()),
        task_matched=f"{task['matched']}/{task['inputs']}",
        max_score_diff=task["max_score_diff"],
        seconds=result.seconds,
        bundle=result.bundle,
    )


def format_table(rows: list[DemoRow]) -> str:
    header = ("| checkpoint (RANDOM-weight stand-in) | task | arch | ONNX MB | max abs diff vs torch "
              "| same output as pipeline | max score diff | build s |")
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r.checkpoint} | {r.task} | {r.architecture} | {r.onnx_mb:.1f} | {r.max_abs_diff_vs_torch:.2e} "
            f"| {r.task_matched} | {r.max_score_diff:.2e} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)
