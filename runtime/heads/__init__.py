"""Task heads: text in, the transformers pipelines' outputs out, on any backend. One module per task."""

from __future__ import annotations

from distilrt.errors import UnsupportedError


def head_class(task: str):
    """The head that runs ``task`` (imported on demand)."""
    if task == "question-answering":
        from distilrt.heads.question_answering import QuestionAnswerer

        return QuestionAnswerer
    if task == "fill-mask":
        from distilrt.heads.fill_mask import FillMask

        return FillMask
    raise UnsupportedError(f"no task head for {task!r}; distilrt runs question-answering and fill-mask")
