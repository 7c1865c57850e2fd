"""Compare a stage's outputs with its source on identical seeded inputs.

Two levels: tensors (per-output atol/rtol, the smallest tolerance that would have passed) and the task (the
runtime's answers vs the transformers pipeline's). Results are dataclasses that serialize to JSON; a failure
raises VerificationError, never a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from distilrt.errors import VerificationError
from distilrt.export.config import Tolerances


@dataclass
class OutputComparison:
    output: str
    shape: tuple[int, ...]
    atol: float
    rtol: float
    max_abs_diff: float
    mean_abs_diff: float
    p99_abs_diff: float
    max_rel_diff: float
    # The smallest atol that passes with this rtol, and the smallest rtol that passes with this atol.
    min_passing_atol: float
    min_passing_rtol: float | None  # None: no rtol can pass (an error where the expected value is 0)
    passed: bool


@dataclass
class TensorVerification:
    source: str
    target: str
    gated: bool = True  # False: statistics only, the task-level gates decide
    cases: list[dict] = field(default_factory=list)  # per (batch, sequence): the OutputComparisons

    @property
    def passed(self) -> bool:
        return all(c["passed"] for case in self.cases for c in case["outputs"])

    def __bool__(self) -> bool:
        return self.passed

    def worst(self) -> dict[str, dict]:
        """Per output, the largest error over all cases and the tolerance it needed."""
        worst: dict[str, dict] = {}
        for case in self.cases:
            for c in case["outputs"]:
                w = worst.setdefault(c["output"], {"max_abs_diff": 0.0, "p99_abs_diff": 0.0, "min_passing_atol": 0.0,
                                                   "min_passing_rtol": 0.0})
                for key in w:  # None (no rtol can pass) stays None
                    w[key] = None if c[key] is None or w[key] is None else max(w[key], c[key])
        return worst

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "worst": self.worst()}


def compare_outputs(name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> OutputComparison:
    if actual.shape != expected.shape:
        raise VerificationError(f"output {name!r} has shape {actual.shape}, expected {expected.shape}")
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    diff = np.abs(actual - expected)
    magnitude = np.abs(expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        # tolerance each element needs beyond the fixed part of the other one
        needed_rtol = np.where(diff <= atol, 0.0, (diff - atol) / magnitude)
    needed_atol = np.maximum(diff - rtol * magnitude, 0.0)
    min_rtol = float(np.nanmax(needed_rtol)) if needed_rtol.size else 0.0
    nonzero = magnitude > 0
    rel = diff[nonzero] / magnitude[nonzero]  # relative error where it is defined
    return OutputComparison(
        output=name,
        shape=tuple(actual.shape),
        atol=atol,
        rtol=rtol,
        max_abs_diff=float(diff.max(initial=0.0)),
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        p99_abs_diff=float(np.percentile(diff, 99)) if diff.size else 0.0,
        max_rel_diff=float(rel.max(initial=0.0)),
        min_passing_atol=float(needed_atol.max(initial=0.0)),
        min_passing_rtol=min_rtol if np.isfinite(min_rtol) else None,
        passed=bool(np.all(diff <= atol + rtol * magnitude)),
    )


RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def verify_tensors(source: RunFn, target: RunFn, feeds: Mapping[tuple[int, int], Mapping[str, np.ndarray]],
                   output_names: tuple[str, ...], tolerances: Tolerances | None, *, source_name: str,
                   target_name: str) -> TensorVerification:
    """Compare on every feed. ``tolerances`` None: statistics only (for int8, which the task gates judge)."""
    result = TensorVerification(source=source_name, target=target_name, gated=tolerances is not None)
    tolerances = tolerances or Tolerances(atol={"": float("inf")})
    for (batch, sequence), feed in feeds.items():
        expected, actual = source(feed), target(feed)
        comparisons = [
            asdict(compare_outputs(name, np.asarray(actual[name]), np.asarray(expected[name]), *tolerances.for_output(name)))
            for name in output_names
        ]
        if not result.gated:
            for c in comparisons:
                c["atol"] = c["rtol"] = None
        result.cases.append({"batch": batch, "sequence": sequence, "outputs": comparisons})
    if not result.passed:
        failures = [
            f"{c['output']} at batch {case['batch']} x seq {case['sequence']}: max |diff| {c['max_abs_diff']:.3g} "
            f"> atol {c['atol']:g} (+ rtol {c['rtol']:g}); needs atol {c['min_passing_atol']:.3g}"
            for case in result.cases for c in case["outputs"] if not c["passed"]
        ]
        raise VerificationError(
            f"{target_name} does not match {source_name}: " + "; ".join(failures), result=result.to_dict()
        )
    return result


@dataclass
class TaskVerification:
    """The runtime's task outputs vs a reference's (the transformers pipeline, where there is one), on the same
    inputs."""

    task: str
    reference: str
    inputs: int
    matched: int
    score_atol: float
    max_score_diff: float
    mismatches: list[dict] = field(default_factory=list)  # the first few, for the report

    @property
    def passed(self) -> bool:
        return self.matched == self.inputs

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def verify_task(task: str, probes: list[tuple[tuple, dict]], reference: Callable, candidate: Callable,
                score_atol: float, *, reference_name: str = "the transformers pipeline", max_reported: int = 5
                ) -> TaskVerification:
    """Run every probe (positional args, keyword args) through both; all fields but scores must be equal."""
    result = TaskVerification(task, reference_name, inputs=len(probes), matched=0, score_atol=score_atol,
                              max_score_diff=0.0)
    for args, kwargs in probes:
        expected, actual = reference(*args, **kwargs), candidate(*args, **kwargs)
        difference = _first_difference(expected, actual, score_atol)
        result.max_score_diff = max(result.max_score_diff, _max_score_diff(expected, actual))
        if difference is None:
            result.matched += 1
        elif len(result.mismatches) < max_reported:
            result.mismatches.append({"input": _describe(args, kwargs), "difference": difference})
    if not result.passed:
        raise VerificationError(
            f"runtime {task} outputs differ from {reference_name} on {result.inputs - result.matched} "
            f"of {result.inputs} inputs; first: {result.mismatches[0]}",
            result=result.to_dict(),
        )
    return result


def _first_difference(expected, actual, score_atol: float, where: str = "") -> str | None:
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where or 'output'}: {len(actual)} items, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = _first_difference(e, a, score_atol, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return f"{where}: keys {sorted(actual)}, expected {sorted(expected)}"
        for key, e in expected.items():
            a = actual[key]
            if key == "score":
                if abs(float(a) - float(e)) > score_atol:
                    return f"{where}.score: {a} vs {e} (|diff| > {score_atol:g})"
            elif a != e:
                return f"{where}.{key}: {a!r}, expected {e!r}"
        return None
    return None if expected == actual else f"{where}: {actual!r}, expected {expected!r}"


def _max_score_diff(expected, actual) -> float:
    if isinstance(expected, list) and isinstance(actual, list):
        return max((_max_score_diff(e, a) for e, a in zip(expected, actual)), default=0.0)
    if isinstance(expected, dict) and isinstance(actual, dict) and "score" in expected and "score" in actual:
        return abs(float(expected["score"]) - float(actual["score"]))
    return 0.0


def _describe(args: tuple, kwargs: dict) -> str:
    text = repr(args[0] if args else kwargs)
    return text if len(text) <= 160 else text[:157] + "..."
