"""`distilrt report`: accuracy and latency of a set of bundles side by side, as JSON (for CI) and Markdown with
PNG plots (for people), optionally gated against a baseline report.

The report is made from `distilrt bench` files alone: each bench file carries the verification section of
every bundle's manifest (the gate figures), so a report can be made where the bundles are not.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from distilrt.bench.plots import ACCURACY_PLOT, latency_plot_name, render_plots, workload_plot_name
from distilrt.bench.regression import DEFAULT_LATENCY_THRESHOLD, compare_reports
from distilrt.bench.runner import BENCH_SCHEMA
from distilrt.errors import UserInputError
from distilrt.files import replace_dir, staging_dir

REPORT_SCHEMA = "distilrt-report/1"


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{what} {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise UserInputError(f"{what} {path} must hold a JSON object")
    return data


def as_report(data: dict, source: str) -> dict:
    """A report as it is, or the report of a bench file (so a bench file can be the baseline too)."""
    if data.get("schema") == REPORT_SCHEMA:
        return data
    return build_report([data], sources=[source])


def build_report(benches: list[dict], evals: list[dict] = (), sources: list[str] | None = None) -> dict:
    """One report over bench results: every bundle's accuracy (gate figures, `distilrt eval` files if given)
    and every latency row with its ratio to PyTorch. Later bench files replace earlier rows of the same cell."""
    sources = list(sources or [f"bench {i}" for i in range(len(benches))])
    variants: dict[tuple, dict] = {}
    latency: dict[tuple, dict] = {}
    workloads: dict[tuple, dict] = {}
    for run, (bench, source) in enumerate(zip(benches, sources)):
        if bench.get("schema") != BENCH_SCHEMA:
            raise UserInputError(f"{source} is not a `distilrt bench` file (schema {bench.get('schema')!r}, "
                                 f"expected {BENCH_SCHEMA!r})")
        for bundle in bench["bundles"]:
            variants[(bundle["checkpoint"], bundle["variant"])] = {**bundle, "run": run}
        for row in bench["results"]:
            key = (row["checkpoint"], row["runner"], row["variant"], row["mode"], row["batch"], row["sequence"])
            latency[key] = {**row, "run": run}
        for row in bench.get("workloads", ()):  # bench files from before workloads have none
            key = (row["checkpoint"], row["runner"], row["variant"], row["workload"], row["items"], row["batch"])
            workloads[key] = {**row, "run": run}
    evals_by_bundle = {_resolved(e["bundle"]): e for e in evals}
    accuracy = [accuracy_record(v, evals_by_bundle.get(_resolved(v["bundle"]))) for v in variants.values()]
    _fill_fp32_gold(accuracy)
    rows = list(latency.values())
    return {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [{"source": source, **{k: bench.get(k) for k in ("created", "machine", "settings", "tools",
                                                                "memory_note")}}
                 for bench, source in zip(benches, sources)],
        "variants": [{**{k: v for k, v in variant.items() if k != "verification"},
                      "benchmarked": _measured(rows, variant)} for variant in variants.values()],
        "accuracy": accuracy,
        "latency": rows,
        "speedups": speedups(rows),
        "workloads": list(workloads.values()),
        "comparison": None,
    }


def make_report(bench_paths, eval_paths=(), baseline: Path | None = None,
                latency_threshold: float = DEFAULT_LATENCY_THRESHOLD) -> dict:
    """The report of bench files (and `distilrt eval` files), compared with ``baseline`` when one is given: what
    `distilrt report` and the CI artifact job both write."""
    benches = [read_json(path, "bench file") for path in bench_paths]
    evals = [read_json(path, "eval file") for path in eval_paths]
    report = build_report(benches, evals, sources=[str(path) for path in bench_paths])
    if baseline is not None:
        old = as_report(read_json(baseline, "baseline"), str(baseline))
        report["comparison"] = {"baseline": str(baseline), **compare_reports(old, report, latency_threshold)}
    return report


def regression_summary(report: dict, where: Path) -> str | None:
    """One line naming the regressions of a compared report, or None when it passed or was not compared."""
    comparison = report.get("comparison")
    if not comparison or comparison["passed"]:
        return None
    regressions = comparison["regressions"]
    more = f" (and {len(regressions) - 1} more)" if len(regressions) > 1 else ""
    return (f"{len(regressions)} regression(s) against {comparison['baseline']}: {regressions[0]['message']}{more}; "
            f"see {where}")


def accuracy_record(bundle: dict, evaluation: dict | None = None) -> dict:
    """The accuracy figures of one bundle from its manifest's verification section: the gate of a derived
    variant (value, threshold, margin, items; gold figures of fp32 and the variant), or fp32's agreement with
    the transformers pipeline."""
    verification = bundle.get("verification") or {}
    record = {"checkpoint": bundle["checkpoint"], "variant": bundle["variant"], "task": bundle["task"],
              "metric": None, "value": None, "threshold": None, "margin": None, "passed": verification.get("passed"),
              "rule": None, "bound": None, "agreement": None, "items": None, "against": None, "gold": None,
              "eval": evaluation}
    gate, figures, task = verification.get("gate"), verification.get("figures") or {}, verification.get("task")
    if gate:
        record.update(metric=gate["metric"], value=gate["value"], threshold=gate["threshold"], margin=gate["margin"],
                      rule=gate.get("rule"), bound=gate.get("bound"), agreement=_agreement(figures),
                      against="fp32", items=_gate_items(bundle["task"], figures), gold=_gold(bundle["task"], figures))
    elif task and task.get("inputs"):
        value = 100.0 * task["matched"] / task["inputs"]
        record.update(metric="matched_vs_pipeline", value=value, threshold=100.0, margin=value - 100.0,
                      items=task["inputs"], against=task.get("against"), max_score_diff=task.get("max_score_diff"))
    return record


def _agreement(figures: dict) -> float | None:
    """Agreement with fp32 (QA: answer F1 against fp32's answers; fill-mask: same top-1 token), the drift figure
    every report keeps whichever rule decided the gate."""
    vs_fp32 = figures.get("vs_fp32") or {}
    return vs_fp32.get("f1", vs_fp32.get("top1_agreement"))


def _gate_items(task: str, figures: dict) -> int | None:
    if task == "question-answering":
        return figures.get("questions")
    return (figures.get("vs_fp32") or {}).get("positions")


def _gold(task: str, figures: dict) -> dict | None:
    """Accuracy on the gold answers (SQuAD EM/F1) or the original tokens (masked top-1/top-5), fp32 and variant."""
    fp32, variant = (("fp32_vs_gold", "vs_gold") if task == "question-answering"
                     else ("fp32_vs_labels", "vs_labels"))
    if fp32 not in figures and variant not in figures:
        return None
    return {"fp32": figures.get(fp32), "variant": figures.get(variant)}


def _fill_fp32_gold(accuracy: list[dict]) -> None:
    """fp32's manifest has no gold figures; its derived variants measured them on their evaluation set."""
    for record in accuracy:
        if record["variant"] != "fp32" or record["gold"]:
            continue
        derived = next((a for a in accuracy if a["checkpoint"] == record["checkpoint"] and a["gold"]
                        and a["gold"].get("fp32")), None)
        if derived is not None:
            fp32 = derived["gold"]["fp32"]
            record["gold"] = {"fp32": fp32, "variant": fp32, "from": derived["variant"]}


def speedups(rows: list[dict]) -> list[dict]:
    """Per checkpoint, runner/variant and mode: the geometric mean of speedup_vs_pytorch over the cells measured."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        speedup = (row.get("ratios") or {}).get("speedup_vs_pytorch")
        if speedup:
            groups.setdefault((row["checkpoint"], row["runner"], row["variant"], row["mode"]), []).append(speedup)
    return [{"checkpoint": c, "runner": r, "variant": v, "mode": m, "cells": len(values),
             "geomean_speedup_vs_pytorch": math.exp(sum(map(math.log, values)) / len(values))}
            for (c, r, v, m), values in groups.items()]


def _measured(rows: list[dict], variant: dict) -> bool:
    return any(r["checkpoint"] == variant["checkpoint"] and r["variant"] == variant["variant"] and r["latency_ms"]
               for r in rows)


def _resolved(path) -> str:
    return str(Path(path).resolve()) if path else ""


def write_report(report: dict, out_dir: Path) -> list[Path]:
    """DIR/report.json, DIR/report.md and the PNGs, written to a temp dir and renamed into place together."""
    out_dir = Path(out_dir)
    with staging_dir(out_dir) as staging:
        plots = render_plots(report, staging)
        report = {**report, "plots": [p.name for p in plots]}
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staging / "report.md").write_text(render_markdown(report), encoding="utf-8")
        replace_dir(staging, out_dir)
    return [out_dir / "report.json", out_dir / "report.md", *(out_dir / p.name for p in plots)]


# ---------------------------------------------------------------------------------------------- Markdown


def render_markdown(report: dict) -> str:
    lines = ["# distilrt benchmark report", "", f"Made {report['created']} from "
             + ", ".join(f"`{run['source']}`" for run in report["runs"]) + ".", ""]
    for run in report["runs"]:
        lines += _run_lines(run)
    if report.get("comparison"):
        lines += _comparison_lines(report["comparison"])
    plots = set(report.get("plots", []))
    for checkpoint in dict.fromkeys(v["checkpoint"] for v in report["variants"]):
        lines += _checkpoint_lines(report, checkpoint)
        if latency_plot_name(checkpoint) in plots:
            lines += [f"![p50 latency vs sequence length]({latency_plot_name(checkpoint)})", ""]
        workload_rows = [r for r in report.get("workloads", ()) if r["checkpoint"] == checkpoint]
        if workload_rows:
            lines += ["### Workloads", "", *workload_table(workload_rows)]
        if workload_plot_name(checkpoint) in plots:
            lines += [f"![items/s per runner]({workload_plot_name(checkpoint)})", ""]
    if ACCURACY_PLOT in plots:
        lines += ["## Accuracy vs speed-up", "", f"![accuracy vs speed-up over PyTorch]({ACCURACY_PLOT})", ""]
    return "\n".join(lines)


def render_bench_markdown(bench: dict) -> str:
    """`distilrt bench`'s table: every row of one bench file."""
    lines = _run_lines({"source": "this run", **bench})
    if bench["results"]:
        lines += latency_table(bench["results"]) + gemm_floor_lines(bench["results"])
    if bench.get("workloads"):
        lines += workload_table(bench["workloads"])
    return "\n".join(lines)


def _run_lines(run: dict) -> list[str]:
    machine, settings, tools = run.get("machine") or {}, run.get("settings") or {}, run.get("tools") or {}
    load = machine.get("load_average")
    lines = [
        f"- `{run['source']}` ({run.get('created')}): {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{_num(machine.get('memory_gb'), 1)} GB, {machine.get('platform')}"
        + (f"; load average {load[0]:.2f} at the start" if load else ""),
        f"  - {settings.get('threads')} threads (ONNX Runtime intra-op, torch"
        + (f"; {settings['threads_source']}" if settings.get("threads_source") else "") + ")",
    ]
    if settings.get("grid", True):  # bench files from before workloads always ran the grid
        lines[-1] += (f"; warm-up {settings.get('warmup')}, up to {settings.get('repeats')} timed runs per cell "
                      f"(at least {settings.get('min_timed_runs')}, {settings.get('max_seconds_per_cell')} s per cell)")
    if settings.get("workloads"):
        lines.append(f"  - workloads {', '.join(settings['workloads'])}, list calls of batch "
                     f"{settings.get('workload_batch')} after one untimed batch")
    return lines + ["  - " + ", ".join(f"{k} {v}" for k, v in tools.items() if v),
                    f"  - memory: {run.get('memory_note')}", ""]


def _comparison_lines(comparison: dict) -> list[str]:
    regressions = comparison["regressions"]
    verdict = "PASSED" if comparison["passed"] else f"FAILED: {len(regressions)} regression(s)"
    lines = ["## Regression gate", "", f"Against `{comparison.get('baseline')}`: **{verdict}**; compared "
             f"{comparison['compared']['accuracy']} accuracy figures and {comparison['compared']['latency']} latency "
             f"cells (latency: p50 / PyTorch p50 may rise by {comparison['latency_threshold']:.0%}; accuracy: by "
             "the noise of its item count).", ""]
    if regressions:
        lines += ["| what | checkpoint | variant | cell | metric | old | new | limit |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['kind']} | {r['checkpoint']} | {r['variant']} | {_cell(r['cell'])} | {r['metric']} | "
                  f"{_num(r['old'], 3)} | {_num(r['new'], 3)} | {_num(r['limit'], 3)} |" for r in regressions]
        lines.append("")
    if comparison["not_compared"]:
        lines += [f"Not compared ({len(comparison['not_compared'])}):", ""]
        lines += [f"- {n['checkpoint']}/{n['variant']}{' ' + _cell(n['cell']) if n['cell'] else ''}: {n['reason']}"
                  for n in comparison["not_compared"]]
        lines.append("")
    return lines


def _checkpoint_lines(report: dict, checkpoint: str) -> list[str]:
    variants = [v for v in report["variants"] if v["checkpoint"] == checkpoint]
    first = variants[0]
    title = f"## {checkpoint} ({first['task']}, {first['architecture']}"
    title += ", RANDOM weights: speed figures only)" if first.get("random_weights") else ")"
    accuracy = {a["variant"]: a for a in report["accuracy"] if a["checkpoint"] == checkpoint}
    lines = [title, "", "### Accuracy", "",
             "| variant | backend | model MB | searched float layers | rule | metric | value | lower bound | threshold "
             "| margin | items | agreement vs fp32 | gold fp32 | gold variant |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant in variants:
        a = accuracy.get(variant["variant"], {})
        lines.append(f"| {variant['variant']} | {variant['backend']} | {_num(variant.get('model_mb'), 1)} | "
                     f"{variant.get('searched_float_layers', '—')} | {a.get('rule') or '—'} | "
                     f"{a.get('metric') or '—'} | {_num(a.get('value'), 2)} | "
                     f"{_num(a.get('bound'), 2)} | {_num(a.get('threshold'), 2)} | {_num(a.get('margin'), 2)} | "
                     f"{a.get('items') or '—'} | {_num(a.get('agreement'), 2)} | {_gold_text(a, 'fp32')} | "
                     f"{_gold_text(a, 'variant')} |")
    lines += ["", *_speedup_lines(report, checkpoint)]
    latency = [r for r in report["latency"] if r["checkpoint"] == checkpoint]
    if latency:  # a workload-only run has no grid
        lines += ["### Latency", "", *latency_table(latency), *gemm_floor_lines(latency)]
    return lines


def gemm_floor_lines(rows: list[dict]) -> list[str]:
    """int8 bundles' model-only p50 next to the int8 GEMM floor measured in the same run (bench/gemm_floor.py)."""
    floors = [r for r in rows if r.get("gemm_floor")]
    if not floors:
        return []
    lines = ["### int8 GEMM floor", "", "The least time the bundle's int8 matrix products alone take here (the same "
             "products, fused by ONNX Runtime as in the model, nothing else), against the model-only p50; "
             "efficiency = floor / model p50:", "",
             "| variant | batch | sequence | floor p50 ms | model p50 ms | efficiency | int8 GEMMs | float linear "
             "layers | GMAC/s |", "|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for r in floors:
        floor = r["gemm_floor"]
        if floor.get("skipped_reason"):
            skipped.append(f"- no floor for {r['variant']} b{r['batch']} s{r['sequence']}: {floor['skipped_reason']}")
            continue
        lines.append(f"| {r['variant']} | {r['batch']} | {r['sequence']} | {floor['latency_ms']['p50']:.2f} | "
                     f"{floor['model_p50_ms']:.2f} | {floor['efficiency']:.0%} | {floor['int8_gemms']} | "
                     f"{floor['float_linear_layers']} | {floor['gmacs_per_s']:.1f} |")
    return lines + [""] + (skipped + [""] if skipped else [])


def _speedup_lines(report: dict, checkpoint: str) -> list[str]:
    """Per variant and mode: its speed-up over the PyTorch pipeline in every cell, and their geometric mean."""
    measured = [r for r in report["latency"] if r["checkpoint"] == checkpoint and r["runner"] != "pytorch"
                and (r.get("ratios") or {}).get("speedup_vs_pytorch")]
    if not measured:
        return []
    cells = sorted({(r["batch"], r["sequence"]) for r in measured})
    geomeans = {(s["variant"] or s["runner"], s["mode"]): s["geomean_speedup_vs_pytorch"]
                for s in report["speedups"] if s["checkpoint"] == checkpoint}
    lines = ["Speed-up over the PyTorch pipeline: its p50 / this p50, same cell, same run (above 1: faster):", "",
             "| variant | mode | " + " | ".join(f"b{b} s{s}" for b, s in cells) + " | geomean |",
             "|---|---|" + "---|" * (len(cells) + 1)]
    for name, mode in dict.fromkeys((r["variant"] or r["runner"], r["mode"]) for r in measured):
        ratio = {(r["batch"], r["sequence"]): r["ratios"]["speedup_vs_pytorch"] for r in measured
                 if (r["variant"] or r["runner"]) == name and r["mode"] == mode}
        lines.append(f"| {name} | {mode} | " + " | ".join(_times(ratio.get(cell)) for cell in cells)
                     + f" | {_times(geomeans.get((name, mode)))} |")
    return lines + [""]


def latency_table(rows: list[dict]) -> list[str]:
    lines = ["| runner | variant | mode | batch | sequence | p50 ms | p90 ms | p99 ms | seq/s | × PyTorch | × Optimum "
             "| peak MB | runs |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped: dict[tuple, list[str]] = {}
    for r in rows:
        if not r["latency_ms"]:
            skipped.setdefault((r["runner"], r["variant"], r["skipped_reason"]), []).append(_cell(r))
            continue
        ratios = r.get("ratios") or {}
        latency = r["latency_ms"]
        lines.append(f"| {r['runner']} | {r['variant'] or '—'} | {r['mode']} | {r['batch']} | {r['sequence']} | "
                     f"{latency['p50']:.2f} | {latency['p90']:.2f} | {latency['p99']:.2f} | "
                     f"{r['throughput_seq_per_s']:.1f} | {_times(ratios.get('speedup_vs_pytorch'))} | "
                     f"{_times(ratios.get('speedup_vs_optimum'))} | {_num(r.get('peak_rss_mb'), 0)} | {r['repeats']} |")
    lines.append("")
    for (runner, variant, reason), cells in skipped.items():
        lines.append(f"- not measured: {runner}{'/' + variant if variant else ''} ({len(cells)} cells): {reason}")
    return lines + ([""] if skipped else [])


def workload_table(rows: list[dict]) -> list[str]:
    """Items/s of every runner over each workload, its ratios, and its accuracy on the same items: against the
    pipeline's answers and against the gold labels. Speed is never shown without accuracy."""
    lines = ["Workloads: text in, answers out over held-out data, in list calls of the batch size; × Optimum int8 is "
             "over the faster of Optimum's dynamic int8 runners (with and without O2) in the same run.", "",
             "| runner | variant | workload | items | batch | items/s | seconds | × pipeline | × Optimum int8 "
             "| vs pipeline | vs gold | peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for r in rows:
        if not r["items_per_s"]:
            skipped.append(f"- not measured: {r['runner']}{'/' + r['variant'] if r['variant'] else ''} on "
                           f"{r['workload']}:{r['items']}: {r['skipped_reason']}")
            continue
        ratios, accuracy = r.get("ratios") or {}, r.get("accuracy") or {}
        lines.append(f"| {r['runner']} | {r['variant'] or '—'} | {r['workload']} | {r['items']} | {r['batch']} | "
                     f"{r['items_per_s']:.1f} | {r['seconds']:.1f} | {_times(ratios.get('vs_pipeline'))} | "
                     f"{_times(ratios.get('vs_optimum_int8'))} | {_accuracy_text(accuracy.get('vs_pipeline'))} | "
                     f"{_accuracy_text(accuracy.get('vs_gold'))} | {_num(r.get('peak_rss_mb'), 0)} |")
    references = sorted({r["optimum_int8_reference"] for r in rows if r.get("optimum_int8_reference")})
    notes = [f"- Optimum int8 reference: {', '.join(references)}"] if references else []
    return lines + [""] + skipped + notes + ([""] if skipped or notes else [])


def _accuracy_text(figures: dict | None) -> str:
    """QA: SQuAD EM / F1 (%); fill-mask: top-1 agreement with the pipeline, or top-1 / top-5 accuracy."""
    if not figures:
        return "—"
    if "f1" in figures:
        return f"EM {figures['exact_match']:.1f} / F1 {figures['f1']:.1f}"
    if "top1_agreement" in figures:
        return f"top-1 {figures['top1_agreement']:.1f}"
    return f"top-1 {figures['top1_accuracy']:.1f} / top-5 {figures['top5_accuracy']:.1f}"


def _gold_text(accuracy: dict, side: str) -> str:
    figures = (accuracy.get("gold") or {}).get(side)
    if not figures:
        return "—"
    if "f1" in figures:
        return f"EM {figures['exact_match']:.1f} / F1 {figures['f1']:.1f}"
    return f"top-1 {figures['top1_accuracy']:.1f} / top-5 {figures['top5_accuracy']:.1f}"


def _cell(cell: dict | None) -> str:
    return f"{cell['mode']} b{cell['batch']} s{cell['sequence']}" if cell else "—"


def _times(value: float | None) -> str:
    return f"{value:.2f}×" if value else "—"


def _num(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
