"""What the installed transformers offers the build: the one place that knows how 4.57 and 5.x differ.

distilrt supports transformers 4.57.x and 5.x (docs/design.md#transformers-4-and-5). The differences the build
must follow:
- the attention implementation whose TorchScript export ONNX Runtime can fuse: "sdpa" on 4.57, "eager" on 5.x;
- 5.x loads a checkpoint in the dtype it was saved in (``dtype="auto"``): the build asks for float32;
- 5.3 removed the question-answering pipeline, the reference the runtime's QA head is verified against.
"""

from __future__ import annotations


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def major_version() -> int:
    return int(transformers_version().split(".")[0])


def fusable_attn_implementation() -> str:
    """The attention implementation whose TorchScript export ONNX Runtime fuses (measured:
    docs/design.md#export-and-attention-implementation)."""
    return "sdpa" if major_version() < 5 else "eager"


def has_pipeline(task: str) -> bool:
    """Whether ``transformers.pipeline(task)`` exists in this transformers (5.3+ has no question-answering)."""
    from transformers.pipelines import SUPPORTED_TASKS

    return task in SUPPORTED_TASKS
