"""The regression gate: what got worse between a baseline report and a new one (pure functions on report dicts).

Latency is compared as the ratio of a variant's p50 to the PyTorch pipeline's p50 for the same cell, both
measured in the same run: a faster or slower machine moves both and leaves the ratio, so only a change in the
variant (or in what it runs on) trips the gate. Accuracy is compared on the gate figure, allowing for the
sampling noise of the number of items it was measured on.
"""

from __future__ import annotations

import math

from distilrt.errors import UserInputError

DEFAULT_LATENCY_THRESHOLD = 0.10  # the new ratio may be at most 10% above the old one
MIN_ACCURACY_NOISE = 0.1  # points: below this, a drop is rounding, not a regression


def accuracy_noise(old_value: float, items: int | None) -> float:
    """Points a figure may drop by before it counts: max(0.1, 2 standard errors of a proportion of ``items``)."""
    if not items:
        return MIN_ACCURACY_NOISE
    p = min(max(old_value / 100.0, 0.0), 1.0)
    return max(MIN_ACCURACY_NOISE, 2.0 * math.sqrt(p * (1.0 - p) / items) * 100.0)


def latency_ratio(row: dict) -> float | None:
    """A distilrt row's p50 over the PyTorch p50 of the same cell and run (the inverse of its speed-up)."""
    speedup = (row.get("ratios") or {}).get("speedup_vs_pytorch")
    return 1.0 / speedup if speedup else None


def compare_reports(old: dict, new: dict, latency_threshold: float = DEFAULT_LATENCY_THRESHOLD) -> dict:
    """Every regression of ``new`` against ``old`` (with old, new and the threshold), and what was not compared.

    A variant of the baseline missing from a checkpoint the new report covers is a regression; a checkpoint the
    new report does not cover at all, and variants or cells in only one report, are "not compared".
    """
    if latency_threshold < 0:
        raise UserInputError(f"the latency threshold must be 0 or more (0.10 is 10%), got {latency_threshold}")
    regressions: list[dict] = []
    not_compared: list[dict] = []
    old_variants, new_variants = _variants(old), _variants(new)
    covered = {checkpoint for checkpoint, _ in new_variants}
    for checkpoint, variant in sorted(old_variants.keys() - new_variants.keys()):
        if checkpoint in covered:
            regressions.append(_regression("missing", checkpoint, variant, None, "published", "published",
                                           "missing", None, None, f"{checkpoint}/{variant} was published in the "
                                           "baseline and is missing now"))
        else:
            not_compared.append(_not_compared(checkpoint, variant, None, "checkpoint not in the new report"))
    for checkpoint, variant in sorted(new_variants.keys() - old_variants.keys()):
        not_compared.append(_not_compared(checkpoint, variant, None, "not in the baseline"))
    both = sorted(old_variants.keys() & new_variants.keys())
    accuracy_compared = _compare_accuracy(old, new, both, regressions, not_compared)
    latency_compared = _compare_latency(old, new, set(both), latency_threshold, regressions, not_compared)
    return {"latency_threshold": latency_threshold, "regressions": regressions, "not_compared": not_compared,
            "compared": {"accuracy": accuracy_compared, "latency": latency_compared}, "passed": not regressions}


def _compare_accuracy(old: dict, new: dict, keys, regressions: list, not_compared: list) -> int:
    old_figures, new_figures = _accuracy(old), _accuracy(new)
    compared = 0
    for checkpoint, variant in keys:
        before, after = old_figures.get((checkpoint, variant)), new_figures.get((checkpoint, variant))
        if before is None or after is None or before["value"] is None or after["value"] is None:
            not_compared.append(_not_compared(checkpoint, variant, None, "accuracy figure missing in "
                                              + ("the baseline" if before is None or before["value"] is None
                                                 else "the new report")))
            continue
        if before["metric"] != after["metric"]:
            not_compared.append(_not_compared(checkpoint, variant, None, f"accuracy metric changed from "
                                              f"{before['metric']} to {after['metric']}"))
            continue
        compared += 1
        noise = accuracy_noise(before["value"], before.get("items"))
        if before["value"] - after["value"] > noise:
            regressions.append(_regression(
                "accuracy", checkpoint, variant, None, before["metric"], before["value"], after["value"], noise,
                before["value"] - noise, f"{checkpoint}/{variant} {before['metric']} dropped from "
                f"{before['value']:.2f} to {after['value']:.2f} (more than the noise, {noise:.2f} points)"))
    return compared


def _compare_latency(old: dict, new: dict, variants: set, threshold: float, regressions: list,
                     not_compared: list) -> int:
    old_rows, new_rows = _latency(old), _latency(new)
    compared = 0
    for key in sorted(old_rows.keys() | new_rows.keys()):
        checkpoint, variant, mode, batch, sequence = key
        if (checkpoint, variant) not in variants:
            continue  # the variant itself is reported above as missing or not compared
        cell = {"mode": mode, "batch": batch, "sequence": sequence}
        before, after = old_rows.get(key), new_rows.get(key)
        old_ratio = latency_ratio(before) if before else None
        new_ratio = latency_ratio(after) if after else None
        if old_ratio is None or new_ratio is None:
            side, row = ("the baseline", before) if old_ratio is None else ("the new report", after)
            why = (row or {}).get("skipped_reason") or "no PyTorch ratio"
            not_compared.append(_not_compared(checkpoint, variant, cell, f"not measured in {side}: {why}"))
            continue
        compared += 1
        limit = old_ratio * (1.0 + threshold)
        if new_ratio > limit:
            regressions.append(_regression(
                "latency", checkpoint, variant, cell, "p50 / pytorch p50", old_ratio, new_ratio, threshold, limit,
                f"{checkpoint}/{variant} {mode} batch {batch} sequence {sequence}: p50 / PyTorch p50 rose from "
                f"{old_ratio:.3f} to {new_ratio:.3f} (limit {limit:.3f}, +{threshold:.0%})"))
    return compared


def _variants(report: dict) -> dict:
    return {(v["checkpoint"], v["variant"]): v for v in report.get("variants", [])}


def _accuracy(report: dict) -> dict:
    return {(a["checkpoint"], a["variant"]): a for a in report.get("accuracy", [])}


def _latency(report: dict) -> dict:
    return {(r["checkpoint"], r["variant"], r["mode"], r["batch"], r["sequence"]): r
            for r in report.get("latency", []) if r.get("runner") == "distilrt"}


def _regression(kind, checkpoint, variant, cell, metric, old, new, threshold, limit, message) -> dict:
    return {"kind": kind, "checkpoint": checkpoint, "variant": variant, "cell": cell, "metric": metric,
            "old": old, "new": new, "threshold": threshold, "limit": limit, "message": message}


def _not_compared(checkpoint, variant, cell, reason) -> dict:
    return {"checkpoint": checkpoint, "variant": variant, "cell": cell, "reason": reason}
