"""What the task heads share: the backend they run on, their own copy of the tokenizer, the tokenizer settings
from the manifest and the batch size they run windows in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distilrt.backends import Closable
from distilrt.config import check_int
from distilrt.tokenization import TokenizerSettings, private_copy, run_in_batches

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from distilrt.backends import Backend


class TaskHead(Closable):
    """Base of ``QuestionAnswerer`` and ``FillMask``. A head owns its backend: ``close()`` (or ``with``) frees it."""

    def __init__(self, backend: Backend, tokenizer: Tokenizer, settings: TokenizerSettings, *, batch_size: int = 8):
        check_int("batch_size", batch_size, minimum=1)
        self._backend = backend
        # A private copy: the heads set truncation on it per call, which must not leak into the caller's tokenizer.
        self._tokenizer = private_copy(tokenizer)
        self._settings = settings
        self._batch_size = batch_size

    @property
    def backend(self) -> str:
        """The backend that runs the model (after a fallback, the one that actually runs)."""
        return self._backend.name

    @property
    def tokenizer_settings(self) -> TokenizerSettings:
        return self._settings

    def tokenizer_copy(self) -> Tokenizer:
        """An independent copy of the head's tokenizer (padding and truncation off), to encode as the head does."""
        return private_copy(self._tokenizer)

    def _run(self, encodings: list[Encoding]) -> list[dict]:
        """The model's outputs for each encoding, run in padded batches of at most batch_size."""
        return run_in_batches(self._backend, encodings, self._settings, self._batch_size)

    def close(self) -> None:
        self._backend.close()
