"""The stage every bundle derived from fp32 goes through, variants and engines alike: compare its model with the
fp32 ONNX on the seeded tensors, gate it on the held-out evaluation split against the fp32 answers, and publish
it only if it passes. A bundle that fails is reported with the margin it missed by and is not published."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import distilrt
from distilrt.backends import open_backend, run_settings
from distilrt.bundle import Bundle
from distilrt.calib.sets import CalibConfig, EvalConfig, mlm_evaluation_set, qa_evaluation_set
from distilrt.calib.synthetic import padded_feeds
from distilrt.errors import BatchVarianceError, DistilrtError, UserInputError, VerificationError
from distilrt.export import gates, invariance
from distilrt.export.config import (
    ACTIVATION_SCALES,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    GATES,
    FuseConfig,
    Gate,
    InvarianceConfig,
    VerifyConfig,
)
from distilrt.export.int8_search import Int8SearchConfig
from distilrt.export.publish import finish_bundle, write_manifest
from distilrt.export.specs import get_spec
from distilrt.export.verify import verify_tensors
from distilrt.manifest import Manifest
from distilrt.progress import Progress


@dataclass(frozen=True)
class VariantOptions:
    """How derived bundles are made and gated: fusion, calibration, the evaluation split and the gates."""

    fuse: FuseConfig = field(default_factory=FuseConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    calibration_method: str = DEFAULT_CALIBRATION_METHOD
    # int8-dynamic's activation scales: "token" (batch-invariant, the default) or ONNX Runtime's "tensor".
    activation_scales: str = "token"
    gates: dict = field(default_factory=lambda: dict(GATES))
    # Accuracy-aware int8 (export/int8_search.py), on by default: on real weights the spec's recipes alone miss
    # the gate (docs/design.md#quantization). None keeps the spec's recipe as it is.
    int8_search: Int8SearchConfig | None = field(default_factory=Int8SearchConfig)
    # Precision configs to use as they are, by variant (a rebuild passes the recorded ones): no search.
    precision: dict = field(default_factory=dict)
    # Alone vs batched on the evaluation split, for every derived bundle (export/invariance.py).
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)

    def __post_init__(self):
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserInputError(f"calibration method {self.calibration_method!r} is unknown; "
                                 f"use one of {', '.join(CALIBRATION_METHODS)}")
        if self.activation_scales not in ACTIVATION_SCALES:
            raise UserInputError(f"activation scales {self.activation_scales!r} are unknown; "
                                 f"use one of {', '.join(ACTIVATION_SCALES)}")


@dataclass
class VariantOutcome:
    """What became of one derived bundle: published where, or why not."""

    variant: str
    published: bool
    bundle: Path | None
    seconds: float
    model_mb: float | None = None
    gate: dict | None = None  # GateResult.to_dict()
    reason: str | None = None  # why it was not published
    calibration: dict | None = None  # identity of the calibration set (static int8), published or not
    skipped: bool = False  # not attempted: the machine lacks what it needs (TensorRT, a GPU); reason says which
    float_layers: dict | None = None  # int8: linear layers left in float (spec recipe + search) of how many
    invariance: dict | None = None  # InvarianceResult.to_dict(): alone vs batched, where it was checked

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    @classmethod
    def failed(cls, variant: str, error: DistilrtError, seconds: float, **extra) -> VariantOutcome:
        """Not published because of ``error``; a missed gate keeps its figures."""
        gate_result = error.result if isinstance(error, VerificationError) and isinstance(error.result, dict) else None
        if isinstance(error, BatchVarianceError):
            extra = {**extra, "invariance": error.invariance}
        return cls(variant, False, None, seconds, None, gate_result, str(error), **extra)


@dataclass(frozen=True)
class Verified:
    """A published bundle's checks: its gate on the evaluation split and its batch invariance."""

    gate: gates.GateResult
    invariance: invariance.InvarianceResult

    def describe(self) -> str:
        return f"{self.gate.describe()}; {self.invariance.describe()}"


class Reference:
    """The fp32 bundle and what every derived bundle is compared with, computed once."""

    def __init__(self, fp32: Bundle, options: VariantOptions, progress: Progress):
        self.bundle = fp32
        self.manifest = fp32.manifest
        self.spec = get_spec(self.manifest.architecture)
        self.task = self.manifest.task
        self.model = open_backend("onnxruntime", fp32.onnx_path)
        self.head = distilrt.head_for(fp32, self.model)
        verify = VerifyConfig.from_dict(self.manifest.stage("verify"))
        self.tensor_feeds = padded_feeds(self.manifest.input_names, verify.shapes, verify.seed, self.manifest.vocab_size,
                                         self.manifest.tokenizer_settings.pad_token_id)
        self.evaluation = options.evaluation
        self.invariance = options.invariance
        # (family, split size) -> (the split, fp32's outputs on it). Two families: "gate", the evaluation split,
        # and "search", the int8 search's split after the largest gate split. Each size extends the last.
        self._splits: dict = {}
        self._largest_gate_split = None  # what the search split comes after; made when a search first asks
        progress(f"evaluation split: computing fp32 reference outputs ({self.task})")
        self._split("gate", options.evaluation)  # fp32's outputs on the evaluation split, once for every variant

    def _make_split(self, family: str, config: EvalConfig):
        after = None
        if family == "search":  # after every split the gate may extend to, so the search cannot fit the gate
            if self._largest_gate_split is None:
                largest = self.evaluation.largest(self.task)
                self._largest_gate_split = (
                    qa_evaluation_set(largest) if self.task == "question-answering"
                    else mlm_evaluation_set(self.head, largest, self.model.input_names))
            after = self._largest_gate_split
        if self.task == "question-answering":
            return qa_evaluation_set(config, after=after)
        return mlm_evaluation_set(self.head, config, self.model.input_names, after=after)

    def _split(self, family: str, config: EvalConfig):
        """A split and fp32's outputs on it (computed for the items not seen yet): splits of one family and seed
        are prefixes of each other, so a larger one only adds items."""
        key = (family, config.questions, config.masked_positions)
        if key not in self._splits:
            split = self._make_split(family, config)
            known = max((v for k, v in self._splits.items() if k[0] == family), key=lambda v: len(v[1]),
                        default=(None, []))[1]
            self._splits[key] = split, known + self._outputs(self.head, self.model, split, len(known), None)
        return self._splits[key]

    def _outputs(self, head, model, split, start: int, progress) -> list:
        """A model's outputs on the split's items from ``start`` on: QA answers, or fill-mask masked logits."""
        if self.task == "question-answering":
            return gates.answer_questions(head, replace(split, questions=split.questions[start:]), progress)
        return gates.masked_logits(model.run, replace(split, feeds=split.feeds[start:],
                                                      positions=split.positions[start:]))

    def _score(self, outputs: list, reference: list, split, gate: Gate) -> gates.GateResult:
        if self.task == "question-answering":
            return gates.qa_gate(reference, outputs, split, gate)
        return gates.mlm_gate(reference, outputs, split, gate)

    def gate(self, bundle_dir: Path, model, gate: Gate, progress: Progress) -> gates.GateResult:
        """Gate the staged bundle, running on ``model``, its already opened backend, on the evaluation split."""
        head = distilrt.head_for(distilrt.read_bundle(bundle_dir), model)
        return self._gate_extending("gate", head, model, gate, self.evaluation, progress)

    @property
    def gate_items(self) -> int:
        """How many items the published gate first decides on: the evaluation split's questions or masked
        positions (it doubles only where a labels-rule interval straddles the threshold)."""
        split, _ = self._split("gate", self.evaluation)
        return len(split.questions) if self.task == "question-answering" else sum(len(p) for p in split.positions)

    def gate_on_search_split(self, model, gate: Gate, config, options: VariantOptions) -> gates.GateResult:
        """Gate a candidate graph (``model``, opened) on the search split: held-out data after every split the
        published gate may use, so that searching cannot fit it. Decided like the gate, extension included."""
        search = replace(options.evaluation, questions=config.questions, max_questions=config.max_questions,
                         masked_positions=config.masked_positions,
                         max_masked_positions=config.max_masked_positions)
        return self._gate_extending("search", distilrt.head_for(self.bundle, model), model, gate, search, None)

    def _gate_extending(self, family: str, head, model, gate: Gate, config: EvalConfig,
                        progress: Progress | None) -> gates.GateResult:
        """Where the paired interval straddles the threshold, the split doubles (up to its configured limit) until
        it does not, so that more items, not noise, decide the close cases (docs/design.md#accuracy-gates)."""
        outputs: list = []
        while True:
            split, reference = self._split(family, config)
            outputs += self._outputs(head, model, split, len(outputs), progress)
            result = self._score(outputs, reference, split, gate)
            bigger = config.extended(self.task) if result.inconclusive else None
            if bigger is None:
                return result
            if progress is not None:
                progress(f"  {result.describe()}: inconclusive on {len(outputs)} items; doubling the split")
            try:
                self._split(family, bigger)
            except UserInputError as e:  # the data holds no more: decide on what there is
                if progress is not None:
                    progress(f"  cannot extend the split ({e}); deciding on {len(outputs)} items")
                return result
            config = bigger

    def batch_invariance(self, bundle_dir: Path, model) -> invariance.InvarianceResult:
        """The staged bundle, running on ``model``, alone vs in mixed-length batches on the evaluation split."""
        split, _ = self._split("gate", self.evaluation)
        return invariance.check(distilrt.read_bundle(bundle_dir), model, split, self.invariance)

    def verify_and_publish(self, staging: Path, destination: Path, candidate, manifest: dict, gate: Gate,
                           report: dict, target_name: str, progress: Progress) -> Verified:
        """Compare the staged bundle's model (opened as ``candidate``) with fp32 on the seeded tensors, gate it on
        the evaluation split, check that it answers the same alone and batched, and publish it to ``destination``
        if it passes; VerificationError (BatchVarianceError) if not."""
        variant = Manifest(manifest).variant
        progress(f"{variant}: comparing tensors with fp32")
        tensors = verify_tensors(self.model.run, candidate.run, self.tensor_feeds, tuple(self.model.output_names),
                                 gate.tensor, source_name="onnx fp32", target_name=target_name)
        write_manifest(staging, manifest)
        progress(f"{variant}: task gate on the evaluation split")
        result = self.gate(staging, candidate, gate, progress)
        if not result.passed:
            raise VerificationError(
                f"{variant} missed its gate: {result.describe()} (by {-result.margin:.2f}); {result.rule_reason}",
                result=result.to_dict())
        progress(f"{variant}: alone vs batched on the evaluation split")
        invariant = self.batch_invariance(staging, candidate)
        invariance.require_invariant(variant, invariant, self.invariance, gate=result.to_dict())
        summary = {"passed": True, "tensors": {"against": "onnx fp32", "gated": tensors.gated,
                                               "worst": tensors.worst()},
                   "gate": {k: v for k, v in result.to_dict().items() if k != "figures"},
                   "figures": result.figures, "batch_invariance": invariant.to_dict()}
        # What the verification ran with (threads and where the count came from), not the parent's record; and
        # the invariance check, which `distilrt serve` reads before it batches requests.
        stages = {**manifest.get("stages", {}), "run": run_settings(candidate),
                  "invariance": invariance.manifest_record(self.invariance, invariant)}
        finish_bundle(staging, destination, {**manifest, "stages": stages},
                      {"tensors": tensors.to_dict(), "gate": result.to_dict(),
                       "batch_invariance": invariant.to_dict(), **report}, summary)
        return Verified(result, invariant)
