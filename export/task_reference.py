"""What a bundle's runtime is verified against at build time.

Where the installed transformers has a pipeline for the task, it is the reference, as users of that pipeline
get it. transformers 5.3 removed the question-answering pipeline; there the reference is the runtime's own
task head on the PyTorch model's logits and on the tokenizer transformers runs. That still checks the export
(ONNX vs PyTorch logits, through the whole head) and the bundle's tokenizer file (the tokenizer check in
``export/tokenizer_check.py`` compares it with AutoTokenizer's ids and offsets); the head's pre- and
post-processing was checked against the 4.57 pipeline by tests/test_heads_parity.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distilrt.export.specs import TaskSpec
from distilrt.export.torch_backend import TorchBackend
from distilrt.export.transformers_support import has_pipeline, transformers_version
from distilrt.tokenization import TokenizerSettings

PIPELINE = "transformers pipeline"
TORCH_HEAD = "runtime head on PyTorch logits"


@dataclass(frozen=True)
class TaskReference:
    kind: str  # PIPELINE or TORCH_HEAD
    description: str  # what report.json names as the reference, with the transformers version
    run: Callable


def task_reference(task: TaskSpec, model, hf_tokenizer, settings: TokenizerSettings, *, batch_size: int = 8
                   ) -> TaskReference:
    version = transformers_version()
    if has_pipeline(task.name):
        import transformers

        pipeline = transformers.pipeline(task.name, model=model, tokenizer=hf_tokenizer, device="cpu")
        return TaskReference(PIPELINE, f"transformers {version} pipeline({task.name!r}) on PyTorch", pipeline)
    from distilrt.heads import head_class

    # The tokenizer object transformers itself runs (AutoTokenizer's backend), not the bundle's file.
    head = head_class(task.name)(TorchBackend(model, task.output_names), hf_tokenizer.backend_tokenizer, settings,
                                 batch_size=batch_size)
    return TaskReference(
        TORCH_HEAD,
        f"distilrt's {task.name} head on the PyTorch model's logits (transformers {version} has no "
        f"{task.name!r} pipeline)",
        head,
    )
