"""Accuracy-aware int8: keep in float the few linear layers that int8 hurts most, until the gate passes.

Pretrained BERT-family encoders carry large outlier activations in a few hidden dimensions, and per-tensor
int8 of the layers that read them loses accuracy that no calibration method wins back
(docs/design.md#quantization). Which layers those are is a property of the weights, so it is measured, not
written in the spec:

1. Sensitivity: each linear layer (a MatMul with a weight) is quantized alone, everything else in float, and
   the model's outputs are compared with fp32's on real calibration inputs (relative squared error).
2. Search: starting from the spec's recipe, the most sensitive layers are left in float one at a time, and each
   candidate is gated, with the variant's own gate, on a search split of held-out data that is disjoint from
   the evaluation split the published gate uses (so the search cannot fit the gate). The first candidate whose
   pass is expected to hold on the gate's split is the recipe; the search stops when the float budget (a share
   of the linear layers) is spent.

Passing on the search split is not enough: the gate's split is another, smaller draw of items, and a candidate
that clears the threshold by less than the two splits' noise fails there about half the time (measured: the spec
recipe at 97.32 on 1,000 search questions, then 96.58 < 97 on the gate's 200). So a candidate is accepted when the
one-sided prediction bound of its figure on a fresh split of the gate's size clears the threshold too
(``GateResult.predicts_pass``): the search leaves one more layer in float rather than hand the gate a coin toss.

The chosen layers go into ``PrecisionConfig.float_nodes``, which the manifest records, so ``distilrt rebuild``
makes the same graph without searching. Written by hand: onnxruntime's quantization tools quantize the nodes
they are told to and have no accuracy-driven selection.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilrt.backends import open_backend
from distilrt.config import StageConfig, check_int
from distilrt.errors import UserInputError
from distilrt.export.build_log import Steps
from distilrt.export.config import Gate, PrecisionConfig
from distilrt.export.precision import convert, float_nodes, weighted_nodes
from distilrt.progress import Progress

# Calibration inputs the sensitivity of each layer is measured on: enough to rank layers, cheap to run.
_SENSITIVITY_FEEDS = 16


@dataclass(frozen=True)
class Int8SearchConfig(StageConfig):
    """How the accuracy search runs. Its search split follows the evaluation split in the same seeded order."""

    # The search split starts at these sizes and doubles, like the gate's, while a candidate's interval straddles
    # the threshold (300 questions measured too noisy: intervals of ±6 points).
    questions: int = 1000  # question answering
    max_questions: int = 2000
    masked_positions: int = 4000  # fill-mask
    max_masked_positions: int = 8000
    max_float_share: float = 0.25  # at most this share of the linear layers is left in float

    def __post_init__(self):
        check_int("questions", self.questions, minimum=8)
        check_int("masked_positions", self.masked_positions, minimum=8)
        check_int("max_questions", self.max_questions, minimum=8)  # below the start size: no extension
        check_int("max_masked_positions", self.max_masked_positions, minimum=8)
        if not 0 < self.max_float_share <= 1:
            raise UserInputError(f"max_float_share must be in (0, 1], got {self.max_float_share}")


@dataclass(frozen=True)
class SearchResult:
    precision: PrecisionConfig
    record: dict  # for the manifest and the report: sensitivities, every step, the choice

    @property
    def passed(self) -> bool:
        return self.record["passed"]


def search_int8(recipe: PrecisionConfig, source: Path, gate: Gate, score, feeds: list[dict],
                config: Int8SearchConfig, progress: Progress, gate_items: int | None = None) -> SearchResult:
    """The spec's ``recipe`` with the fewest float layers whose graph passes ``gate`` on the search split, with
    the margin a split of ``gate_items`` items (the published gate's) needs; without it, a plain pass.

    ``score(path, gate)`` gates the graph at ``path`` on the search split and returns its GateResult; ``feeds``
    are real model inputs (calibration feeds, padded to one length) for the sensitivities and the calibration.
    """
    with tempfile.TemporaryDirectory(prefix="distilrt-int8-search-") as scratch:
        scratch = Path(scratch)
        candidate = scratch / "candidate.onnx"
        convert(recipe, source, candidate, feeds, work_dir=scratch, progress=progress)
        spec_float = set(float_nodes(candidate, recipe))
        linear = [n for n in weighted_nodes(source, recipe.op_types) if n not in spec_float]
        budget = int(config.max_float_share * len(linear))
        steps = [_step(score(candidate, gate), [], gate, gate_items)]
        progress(f"{recipe.variant} search: spec recipe {steps[-1]['gate']}")
        sensitivities = []
        if not steps[-1]["passed"] and budget > 0:
            sensitivities = layer_sensitivity(recipe, source, linear, feeds, scratch, progress)
            for count in range(1, budget + 1):
                chosen = [s["node"] for s in sensitivities[:count]]
                convert(recipe.with_float_nodes(chosen), source, candidate, feeds, work_dir=scratch)
                steps.append(_step(score(candidate, gate), chosen, gate, gate_items))
                progress(f"{recipe.variant} search: {count} layer(s) in float: {steps[-1]['gate']}")
                if steps[-1]["passed"]:
                    break
    final = steps[-1]
    record = {"passed": final["passed"], "float_nodes": final["float_nodes"], "linear_layers": len(linear),
              "budget": budget, "gate_items": gate_items, "search": config.to_dict(), "steps": steps,
              "sensitivity": sensitivities}
    return SearchResult(recipe.with_float_nodes(final["float_nodes"]), record)


def _step(result, chosen: list[str], gate: Gate, gate_items: int | None) -> dict:
    """One candidate: ``passed`` is the search's decision (a pass expected to hold on the gate's split);
    ``passed_split``, whether it passed on the search split itself."""
    predicted = None if gate_items is None else result.predicted_value(gate_items, gate.confidence)
    passed = result.passed if gate_items is None else result.predicts_pass(gate_items, gate.confidence)
    gate_text = result.describe()
    if predicted is not None:
        gate_text += f"; on {gate_items} fresh items expected >= {predicted:.2f}"
    return {"float_nodes": list(chosen), "passed": passed, "passed_split": result.passed, "gate": gate_text,
            "value": result.value, "bound": result.bound, "predicted": predicted, "rule": result.rule}


def layer_sensitivity(recipe: PrecisionConfig, source: Path, layers: list[str], feeds: list[dict], scratch: Path,
                      progress: Progress) -> list[dict]:
    """Each layer quantized alone: the relative squared error of the model's outputs against fp32, worst first."""
    probe = feeds[:_SENSITIVITY_FEEDS]
    reference = open_backend("onnxruntime", source)
    expected = [reference.run(feed) for feed in probe]
    reference.close()
    progress(f"{recipe.variant} search: sensitivity of {len(layers)} linear layers on {len(probe)} real inputs")
    path = scratch / "alone.onnx"
    results = []
    with Steps(progress, f"{recipe.variant} search: sensitivity", len(layers), "layers") as steps:
        for layer in layers:
            others = [n for n in layers if n != layer]
            convert(recipe.with_float_nodes(others), source, path, feeds, work_dir=scratch)
            with open_backend("onnxruntime", path) as model:
                error = float(np.mean([_relative_error(model.run(feed), want) for feed, want in zip(probe, expected)]))
            results.append({"node": layer, "relative_error": error})
            steps.advance()
    return sorted(results, key=lambda r: -r["relative_error"])


def _relative_error(got: dict, want: dict) -> float:
    """Squared error over squared size, summed over the outputs (start and end logits, or MLM logits)."""
    error = sum(float(np.sum((got[name] - want[name]) ** 2)) for name in want)
    size = sum(float(np.sum(want[name] ** 2)) for name in want)
    return error / max(size, 1e-30)
