"""`distilrt demo`: the whole path, offline, on stand-ins of the five seed checkpoints (RANDOM weights).

Each stand-in has its checkpoint's real config and tokenizer, so export, verification and the runtime do the
same work as on the published weights; only the answers are meaningless.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions, BuildResult, build_fp32
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.progress import Progress, print_progress


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
             options: BuildOptions | None = None, progress: Progress = print_progress) -> list[DemoRow]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="distilrt-demo-") as scratch:
        for name in checkpoints:
            progress(f"making a {'tiny' if tiny else 'full-size'} RANDOM-weight stand-in for {name}")
            directory = make_random_checkpoint(name, Path(scratch) / name, tiny=tiny)
            result = build_fp32(str(directory), replace(options or BuildOptions(), out_dir=out_dir), progress)
            rows.append(_row(name, result))
    return rows


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
