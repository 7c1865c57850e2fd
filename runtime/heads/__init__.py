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


def check_options(task: str, options: dict) -> None:
    """The checks of a task's keyword options that need no model (types, int32 ranges): a server runs them on
    each request before it joins a batch; the head runs the same ones, and those that need the model."""
    if task == "question-answering":
        from distilrt.heads.question_answering import QAOptions

        QAOptions(**options)
    elif "top_k" in options:
        from distilrt.heads.fill_mask import check_top_k

        check_top_k(options["top_k"])
