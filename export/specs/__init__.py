"""Architecture specs: one per architecture, registered with the tasks it supports.

Generic code asks the registry (``get_spec``) instead of branching on ``model_type``: a new architecture is
one new module here.
"""

from __future__ import annotations

from dataclasses import dataclass

from distilrt.errors import UnsupportedError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    output_names: tuple[str, ...]
    auto_class: str  # transformers Auto* class that loads a checkpoint with this task's head
    architecture_suffix: str  # e.g. DistilBertForQuestionAnswering ends with this


QUESTION_ANSWERING = TaskSpec(
    "question-answering", ("start_logits", "end_logits"), "AutoModelForQuestionAnswering", "ForQuestionAnswering"
)
FILL_MASK = TaskSpec("fill-mask", ("logits",), "AutoModelForMaskedLM", "ForMaskedLM")
TASKS = {task.name: task for task in (QUESTION_ANSWERING, FILL_MASK)}


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str  # config.model_type
    input_names: tuple[str, ...]  # ONNX inputs, in the order the exporter passes them
    tasks: tuple[TaskSpec, ...]
    # Position ids reserved before the first token (RoBERTa counts positions from padding_idx + 1).
    position_offset: int = 0

    def max_sequence(self, config: dict) -> int:
        """The longest input the model's position embeddings allow."""
        return int(config["max_position_embeddings"]) - self.position_offset

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
