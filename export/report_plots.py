"""The report's PNG plots: p50 latency against sequence length per checkpoint, and accuracy against speed-up.

Drawn with matplotlib's Figure API (the Agg canvas), which needs no display and sets no global backend.
"""

from __future__ import annotations

import re
from pathlib import Path

from distilrt.errors import CapabilityError

ACCURACY_PLOT = "accuracy-vs-speedup.png"
MODE_TITLES = {"model": "model only", "end_to_end": "end to end (text in, answers out)"}


def latency_plot_name(checkpoint: str) -> str:
    return f"latency-{re.sub(r'[^A-Za-z0-9._-]+', '-', checkpoint)}.png"


def render_plots(report: dict, out_dir: Path) -> list[Path]:
    """One PNG per checkpoint with latency figures, and one of accuracy vs speed-up when there is a speed-up."""
    figure_class = _figure_class()
    paths = []
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in report["latency"]):
        rows = [r for r in report["latency"] if r["checkpoint"] == checkpoint and r["latency_ms"]]
        if rows:
            paths.append(_latency_plot(figure_class, checkpoint, rows, Path(out_dir) / latency_plot_name(checkpoint)))
    points = accuracy_points(report)
    if points:
        paths.append(_accuracy_plot(figure_class, points, Path(out_dir) / ACCURACY_PLOT))
    return paths


def accuracy_points(report: dict) -> list[dict]:
    """Per variant and mode: its agreement with fp32 (fp32 itself: 100) against its speed-up over PyTorch."""
    agreement = {(a["checkpoint"], a["variant"]): 100.0 if a["variant"] == "fp32" else a["value"]
                 for a in report["accuracy"] if a["variant"] == "fp32" or a["against"] == "fp32"}
    points = []
    for speedup in report["speedups"]:
        value = agreement.get((speedup["checkpoint"], speedup["variant"]))
        if speedup["runner"] == "distilrt" and value is not None:
            points.append({"checkpoint": speedup["checkpoint"], "variant": speedup["variant"], "mode": speedup["mode"],
                           "speedup": speedup["geomean_speedup_vs_pytorch"], "agreement": value})
    return points


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise CapabilityError("distilrt report draws its plots with matplotlib: pip install matplotlib "
                              "(or distilrt[report])") from e
    return Figure


def _latency_plot(figure_class, checkpoint: str, rows: list[dict], path: Path) -> Path:
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    figure = figure_class(figsize=(5 * len(batches), 3.8 * len(modes)), layout="constrained")
    axes = figure.subplots(len(modes), len(batches), squeeze=False)
    for i, mode in enumerate(modes):
        for j, batch in enumerate(batches):
            ax = axes[i][j]
            cell_rows = [r for r in rows if r["mode"] == mode and r["batch"] == batch]
            for name in dict.fromkeys(r["variant"] or r["runner"] for r in cell_rows):
                line = sorted((r["sequence"], r["latency_ms"]["p50"]) for r in cell_rows
                              if (r["variant"] or r["runner"]) == name)
                reference = name in ("pytorch", "optimum")
                ax.plot(*zip(*line), marker="o", linestyle="--" if reference else "-", label=name,
                        color="black" if name == "pytorch" else None)
            ax.set_yscale("log")
            ax.set_title(f"{MODE_TITLES.get(mode, mode)}, batch {batch}", fontsize=10)
            ax.set_xlabel("sequence length (tokens)")
            ax.set_ylabel("p50 latency (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    figure.suptitle(f"{checkpoint}: p50 latency per call")
    figure.savefig(path, dpi=100)
    return path


def _accuracy_plot(figure_class, points: list[dict], path: Path) -> Path:
    modes = list(dict.fromkeys(p["mode"] for p in points))
    figure = figure_class(figsize=(6 * len(modes), 4.5), layout="constrained")
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    checkpoints = list(dict.fromkeys(p["checkpoint"] for p in points))
    for ax, mode in zip(axes, modes):
        for index, checkpoint in enumerate(checkpoints):
            mine = [p for p in points if p["mode"] == mode and p["checkpoint"] == checkpoint]
            if not mine:
                continue
            ax.scatter([p["speedup"] for p in mine], [p["agreement"] for p in mine], label=checkpoint,
                       color=f"C{index % 10}")
            for p in mine:
                ax.annotate(p["variant"], (p["speedup"], p["agreement"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.axvline(1.0, color="gray", linewidth=0.8, linestyle=":")  # as fast as PyTorch
        ax.set_xscale("log")  # speed-ups range from below 1 to hundreds
        ax.set_title(MODE_TITLES.get(mode, mode), fontsize=10)
        ax.set_xlabel("speed-up over the PyTorch pipeline (p50, geometric mean over cells)")
        ax.set_ylabel("agreement with fp32 (%): QA F1, fill-mask top-1")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("accuracy vs speed-up")
    figure.savefig(path, dpi=100)
    return path
