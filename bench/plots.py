"""The report's PNG plots: p50 latency against sequence length per checkpoint, items/s per runner over each
workload, and accuracy against speed-up.

Drawn with matplotlib's Figure API (the Agg canvas), which needs no display and sets no global backend.
"""

from __future__ import annotations

import re
from pathlib import Path

from distilrt.errors import CapabilityError

ACCURACY_PLOT = "accuracy-vs-speedup.png"
VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MODE_TITLES = {"model": "model only", "end_to_end": "end to end (text in, answers out)"}


def latency_plot_name(checkpoint: str) -> str:
    return f"latency-{re.sub(r'[^A-Za-z0-9._-]+', '-', checkpoint)}.png"


def workload_plot_name(checkpoint: str) -> str:
    return f"workloads-{re.sub(r'[^A-Za-z0-9._-]+', '-', checkpoint)}.png"


def render_plots(report: dict, out_dir: Path) -> list[Path]:
    """One PNG per checkpoint with latency figures, and one of accuracy vs speed-up when there is a speed-up."""
    figure_class = _figure_class()
    paths = []
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in report["latency"]):
        rows = [r for r in report["latency"] if r["checkpoint"] == checkpoint and r["latency_ms"]]
        if rows:
            paths.append(_latency_plot(figure_class, checkpoint, rows, Path(out_dir) / latency_plot_name(checkpoint)))
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in report.get("workloads", ())):
        rows = [r for r in report["workloads"] if r["checkpoint"] == checkpoint and r["items_per_s"]]
        if rows:
            paths.append(_workload_plot(figure_class, checkpoint, rows, Path(out_dir) / workload_plot_name(checkpoint)))
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


def _plain(value, _position) -> str:
    """Log-axis tick labels as plain numbers (30, not 3×10¹)."""
    return f"{value:g}"


def _times(value, _position) -> str:
    return f"{value:g}×"


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
            ax.yaxis.set_major_formatter(_plain)
            ax.yaxis.set_minor_formatter(_plain)
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_title(f"{MODE_TITLES.get(mode, mode)}, batch {batch}", fontsize=10)
            ax.set_xlabel("sequence length (tokens)")
            ax.set_ylabel("p50 latency (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    figure.suptitle(f"{checkpoint}: p50 latency per call")
    figure.savefig(path, dpi=100)
    return path


def _accuracy_plot(figure_class, points: list[dict], path: Path) -> Path:
    """Colour names the checkpoint and the marker the variant: labels next to each point overlap when a
    checkpoint's variants sit close together."""
    from matplotlib.lines import Line2D

    modes = list(dict.fromkeys(p["mode"] for p in points))
    figure = figure_class(figsize=(6 * len(modes), 4.8), layout="constrained")
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    colours = {c: f"C{i % 10}" for i, c in enumerate(dict.fromkeys(p["checkpoint"] for p in points))}
    markers = {v: VARIANT_MARKERS[i % len(VARIANT_MARKERS)]
               for i, v in enumerate(dict.fromkeys(p["variant"] for p in points))}
    for ax, mode in zip(axes, modes):
        for p in (p for p in points if p["mode"] == mode):
            ax.scatter(p["speedup"], p["agreement"], color=colours[p["checkpoint"]], marker=markers[p["variant"]],
                       s=40, alpha=0.85)
        ax.axvline(1.0, color="gray", linewidth=0.8, linestyle=":")  # as fast as PyTorch
        ax.set_xscale("log")  # speed-ups range from below 1 to hundreds
        ax.set_title(MODE_TITLES.get(mode, mode), fontsize=10)
        ax.xaxis.set_major_formatter(_times)
        ax.xaxis.set_minor_formatter(_times)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("speed-up over PyTorch (geomean of p50 ratios)")
        ax.set_ylabel("agreement with fp32 (%): QA F1, fill-mask top-1")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", color=c, label=name) for name, c in colours.items()]
    handles += [Line2D([], [], linestyle="", marker=m, color="gray", label=name) for name, m in markers.items()]
    figure.legend(handles=handles, loc="outside right center", fontsize=8)
    figure.suptitle("accuracy vs speed-up")
    figure.savefig(path, dpi=100)
    return path


def _workload_plot(figure_class, checkpoint: str, rows: list[dict], path: Path) -> Path:
    """One bar chart per workload: items/s of each runner, labelled with its agreement with the pipeline."""
    workloads = list(dict.fromkeys((r["workload"], r["items"], r["batch"]) for r in rows))
    height = max(2.5, 0.45 * max(sum(1 for r in rows if (r["workload"], r["items"], r["batch"]) == w) for w in workloads))
    figure = figure_class(figsize=(7, height * len(workloads)), layout="constrained")
    axes = figure.subplots(len(workloads), 1, squeeze=False)[:, 0]
    for ax, (name, items, batch) in zip(axes, workloads):
        group = [r for r in rows if (r["workload"], r["items"], r["batch"]) == (name, items, batch)]
        labels = [f"distilrt {r['variant']}" if r["runner"] == "distilrt" else r["runner"] for r in group]
        speeds = [r["items_per_s"] for r in group]
        colours = ["black" if r["runner"] == "pytorch" else "C0" if r["runner"] == "distilrt" else "C1" for r in group]
        bars = ax.barh(labels, speeds, color=colours)
        ax.bar_label(bars, labels=[_agreement_label(r) for r in group], padding=3, fontsize=8)
        ax.invert_yaxis()  # the first runner on top, as in the table
        ax.set_xlim(0, max(speeds) * 1.35)  # room for the labels
        ax.set_xlabel(f"{group[0]['unit']} per second")
        ax.set_title(f"{name}, {items} items, batch {batch} (label: agreement with the pipeline)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    figure.suptitle(f"{checkpoint}: workloads")
    figure.savefig(path, dpi=100)
    return path


def _agreement_label(row: dict) -> str:
    figures = (row.get("accuracy") or {}).get("vs_pipeline")
    if not figures:
        return f"{row['items_per_s']:.1f}/s"
    value = figures.get("f1", figures.get("top1_agreement"))
    return f"{row['items_per_s']:.1f}/s, {'F1' if 'f1' in figures else 'top-1'} {value:.1f}"
