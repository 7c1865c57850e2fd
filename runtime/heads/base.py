"""What the task heads share: the backend they run on, their own copy of the tokenizer, the tokenizer settings
from the manifest and how they batch windows (count, token budget, length order)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distilrt.backends import Closable
from distilrt.config import check_int
from distilrt.errors import UserInputError
from distilrt.limits import RequestLimits
from distilrt.tokenization import DEFAULT_MAX_BATCH_TOKENS, TokenizerSettings, private_copy, run_in_batches

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from distilrt.backends import Backend


class TaskHead(Closable):
    """Base of ``QuestionAnswerer`` and ``FillMask``. A head owns its backend: ``close()`` (or ``with``) frees it."""

    def __init__(self, backend: Backend, tokenizer: Tokenizer, settings: TokenizerSettings, *, batch_size: int = 8,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, sort_by_length: bool = True,
                 limits: RequestLimits | None = None):
        check_int("batch_size", batch_size, minimum=1)
        check_int("max_batch_tokens", max_batch_tokens, minimum=1)
        if not isinstance(sort_by_length, bool):
            raise UserInputError(f"sort_by_length must be True or False, got {sort_by_length!r}")
        if limits is not None and not isinstance(limits, RequestLimits):
            raise UserInputError(f"limits must be a distilrt.limits.RequestLimits, got {type(limits).__name__}")
        self._backend = backend
        # A private copy: the heads set truncation on it per call, which must not leak into the caller's tokenizer.
        self._tokenizer = private_copy(tokenizer)
        self._settings = settings
        self._batch_size = batch_size
        self._max_batch_tokens = max_batch_tokens
        self._sort_by_length = sort_by_length
        self._limits = limits or RequestLimits()

    @property
    def backend(self) -> str:
        """The backend that runs the model (after a fallback, the one that actually runs)."""
        return self._backend.name

    @property
    def limits(self) -> RequestLimits:
        """How much work one call may ask for (README.md#bounded-work-per-request)."""
        return self._limits

    def _check_inputs(self, count: int, what: str) -> None:
        """The limit on inputs per call, checked before any input is validated or tokenized."""
        self._limits.check("max_inputs", count, f"the number of {what} in one call",
                           f"send at most {self._limits.max_inputs} {what} per call")

    def _check_chars(self, texts: list[str]) -> None:
        """The limit on characters per call, checked before any text is tokenized."""
        self._limits.check("max_text_chars", sum(len(text) for text in texts), "the characters of one call",
                           "send shorter texts or fewer per call")

    @property
    def tokenizer_settings(self) -> TokenizerSettings:
        return self._settings

    def tokenizer_copy(self) -> Tokenizer:
        """An independent copy of the head's tokenizer (padding and truncation off), to encode as the head does."""
        return private_copy(self._tokenizer)

    def _run(self, encodings: list[Encoding]) -> list[dict]:
        """The model's outputs for each encoding, in input order; run in batches of at most batch_size encodings
        and max_batch_tokens padded tokens, grouped by length unless sort_by_length is off.

        Grouping does not change fp32 answers beyond float rounding (tests/test_batching.py). Dynamic int8 graphs
        quantize each activation with one scale per batch, so their answers depend on which windows share a batch
        (in either order); batch_size=1 makes them independent of it."""
        return run_in_batches(self._backend, encodings, self._settings, self._batch_size,
                              max_batch_tokens=self._max_batch_tokens, sort_by_length=self._sort_by_length)

    def close(self) -> None:
        self._backend.close()
