"""Architecture specs: one per architecture, registered with the tasks it supports.

Generic code asks the registry (``get_spec``) instead of branching on ``model_type``: a new architecture is
one new module here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distilrt.errors import UnsupportedError
from distilrt.tokenization import MASK_POSITIONS


@dataclass(frozen=True)
class TaskSpec:
    name: str
    output_names: tuple[str, ...]
    auto_class: str  # transformers Auto* class that loads a checkpoint with this task's head
    architecture_suffix: str  # e.g. DistilBertForQuestionAnswering ends with this
    # Graph inputs beyond the tokenizer's: fill-mask graphs take the positions to predict (docs/design.md#masked-positions)
    extra_input_names: tuple[str, ...] = ()


QUESTION_ANSWERING = TaskSpec(
    "question-answering", ("start_logits", "end_logits"), "AutoModelForQuestionAnswering", "ForQuestionAnswering"
)
FILL_MASK = TaskSpec("fill-mask", ("logits",), "AutoModelForMaskedLM", "ForMaskedLM", (MASK_POSITIONS,))
TASKS = {task.name: task for task in (QUESTION_ANSWERING, FILL_MASK)}


@dataclass(frozen=True)
class FusionSpec:
    """What ONNX Runtime's transformer optimizer must reach on this architecture, per encoder layer.

    ``per_layer`` and ``fixed`` give the minimum count of each fused op (the MLM head can add one more Gelu);
    ``layers_unfused`` is how many layers' attention cannot fuse; ``not_fused`` records, with the reason, each
    fusion that cannot happen, so a report can say why rather than look incomplete.
    """

    per_layer: dict[str, int]
    fixed: dict[str, int] = field(default_factory=dict)
    layers_unfused: dict[str, int] = field(default_factory=dict)
    not_fused: dict[str, str] = field(default_factory=dict)

    def expected_counts(self, layers: int) -> dict[str, int]:
        counts = {op: n * (layers - self.layers_unfused.get(op, 0)) for op, n in self.per_layer.items()}
        return {**counts, **self.fixed}


@dataclass(frozen=True)
class Int8Recipe:
    """Which ops get int8 Q/DQ. Quantizing only MatMul inputs keeps LayerNorm, GELU, Softmax, the residual
    Adds and the embedding Gathers in float: quantizing every op wrecks BERT-family accuracy (docs/design.md#quantization).

    ``keep_float`` are substrings of exported node names kept in float as well: the task heads (their
    output is the answer itself; the MLM decoder is the tied word-embedding matrix) and embedding projections.
    """

    op_types: tuple[str, ...] = ("MatMul",)
    keep_float: tuple[str, ...] = ()


# Ops an fp16 graph keeps in fp32: their reductions overflow or lose precision in fp16.
FP16_KEEP_FP32 = ("LayerNormalization", "Softmax")


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str  # config.model_type
    input_names: tuple[str, ...]  # ONNX inputs, in the order the exporter passes them
    tasks: tuple[TaskSpec, ...]
    fusion: FusionSpec
    # config.json keys for (layers, attention heads, hidden size)
    shape_keys: tuple[str, str, str] = ("num_hidden_layers", "num_attention_heads", "hidden_size")
    # Position ids reserved before the first token (RoBERTa counts positions from padding_idx + 1).
    position_offset: int = 0
    int8: Int8Recipe = Int8Recipe()
    fp16_keep_fp32: tuple[str, ...] = FP16_KEEP_FP32
    # The masked-LM model's head after its encoder (``model.<base_model_prefix>``): submodule names, applied in
    # order as the model's own forward applies them. The export runs them on the masked positions' states only.
    mlm_head: tuple[str, ...] = ()

    def model_input_names(self, task: TaskSpec) -> tuple[str, ...]:
        """The exported graph's inputs for ``task``, in order: the tokenizer's, then the task's own."""
        return (*self.input_names, *task.extra_input_names)

    def max_sequence(self, config: dict) -> int:
        """The longest input the model's position embeddings allow."""
        return int(config["max_position_embeddings"]) - self.position_offset

    def layers_heads_hidden(self, config: dict) -> tuple[int, int, int]:
        return tuple(int(config[key]) for key in self.shape_keys)

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise UnsupportedError(
            f"architecture {self.model_type!r} does not support task {name!r}; "
            f"it supports: {', '.join(t.name for t in self.tasks)}"
        )


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register(spec: ArchitectureSpec) -> ArchitectureSpec:
    if spec.model_type in _REGISTRY:
        raise ValueError(f"architecture {spec.model_type!r} registered twice")
    _REGISTRY[spec.model_type] = spec
    return spec


def get_spec(model_type: str) -> ArchitectureSpec:
    _load_builtin_specs()
    if model_type not in _REGISTRY:
        raise UnsupportedError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(supported_architectures())}"
        )
    return _REGISTRY[model_type]


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UnsupportedError(f"unsupported task {name!r}; supported tasks: {', '.join(TASKS)}")
    return TASKS[name]


def supported_architectures() -> list[str]:
    _load_builtin_specs()
    return sorted(_REGISTRY)


def _load_builtin_specs() -> None:
    # Imported for their register() side effect; done lazily to avoid an import cycle with this module.
    from distilrt.export.specs import albert, bert, distilbert, roberta  # noqa: F401
