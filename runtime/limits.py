"""How much work one call of a task head may ask for.

Inputs and options come from callers, and through a server from anyone: what one call costs must be bounded
by limits the operator chose, not by the numbers written in the request. Each limit is checked before the work
it bounds (before tokenizing, before running the model, before ranking answers), and a request past one is a
UserInputError naming the limit, the request's count and how to raise the limit. README.md#bounded-work-per-request
gives each default and the worst-case cost measured at it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from distilrt.config import StageConfig, check_int
from distilrt.errors import UserInputError

# The largest value an integer option takes: a served option tensor is TYPE_INT32, so no request to a server
# can carry more, and the in-process heads refuse the same values.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class RequestLimits(StageConfig):
    """Per-call limits of a task head: ``distilrt.load(path, limits=RequestLimits(max_windows=...))``."""

    max_inputs: int = 4096  # examples (question answering) or texts (fill-mask) in one call
    max_text_chars: int = 8_000_000  # characters of all questions, contexts or texts of one call together
    max_windows: int = 4096  # model windows one question-answering call runs (long contexts need several)
    max_masks: int = 64  # mask tokens in one fill-mask text
    max_targets: int = 1000  # fill-mask targets
    max_target_chars: int = 100  # characters of one fill-mask target
    # Candidate answers one call ranks and turns into text: question answering's (start, end) spans,
    # fill-mask's (mask, token) predictions.
    max_proposals: int = 200_000

    def __post_init__(self):
        for field in fields(self):
            check_int(f"RequestLimits.{field.name}", getattr(self, field.name), minimum=1)

    def check(self, name: str, count: int, what: str, fix: str) -> None:
        """UserInputError unless ``count`` (of ``what``) is within the limit ``name``; ``fix`` says what the caller
        can change in the request."""
        limit = getattr(self, name)
        if count > limit:
            raise UserInputError(
                f"{what} is {count}, more than this model's limit of {limit} (RequestLimits.{name}); {fix}, or "
                f"have the operator raise it: distilrt.load(..., limits=RequestLimits({name}=...))"
            )
