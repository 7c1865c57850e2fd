"""Tokenizer loading and the settings the task heads need, shared by question answering and fill-mask.

The bundle's tokenizer.json is the checkpoint's own fast tokenizer (the `tokenizers` library object that
transformers wraps), so encoding is byte-for-byte the same as in transformers. What transformers adds on top
(which inputs the model takes, padding side, special-token ids, decode clean-up) is recorded at build time
as ``TokenizerSettings`` in the manifest, because the runtime cannot import transformers to ask it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilrt.errors import BundleError, UnsupportedError, UserInputError

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from distilrt.backends import Backend


@dataclass(frozen=True)
class TokenizerSettings:
    """What the transformers tokenizer wrapper knows beyond tokenizer.json."""

    model_input_names: tuple[str, ...]  # inputs the pipeline feeds from the tokenizer's output
    padding_side: str  # "right" puts the question first in QA
    pad_token_id: int
    cls_token_id: int | None
    mask_token: str | None
    mask_token_id: int | None
    model_max_length: int
    clean_up_tokenization_spaces: bool

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise BundleError(f"tokenizer padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.model_max_length < 1:
            raise BundleError(f"tokenizer model_max_length must be positive, got {self.model_max_length}")
        object.__setattr__(self, "model_input_names", tuple(self.model_input_names))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_input_names"] = list(self.model_input_names)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerSettings:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise BundleError(f"manifest tokenizer settings lack {sorted(missing)}; rebuild the bundle")
        return cls(**{k: data[k] for k in names})


def load_tokenizer(path: Path):
    """Load tokenizer.json with its own padding and truncation switched off: the heads set them per call."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:
        raise BundleError(f"{path} is not a valid tokenizers file ({e}); rebuild the bundle") from e
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def private_copy(tokenizer: Tokenizer) -> Tokenizer:
    """An independent copy with padding and truncation off.

    A head sets truncation per call on its own copy, so it never changes the caller's tokenizer and calls on
    one head cannot leak settings into another.
    """
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def check_text(name: str, text: str) -> None:
    """UserInputError unless ``text`` is valid Unicode: tokenizers refuses a lone surrogate (a str that cannot be
    UTF-8 encoded, e.g. from bytes decoded with errors="surrogateescape") with a bare TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserInputError(
            f"{name} holds {text[e.start]!r} at character {e.start}, a lone surrogate that is not valid Unicode; "
            "decode the input bytes as UTF-8 (errors='replace' to keep going past bad bytes) or remove it"
        ) from None


def run_in_batches(
    backend: Backend, encodings: Sequence[Encoding], settings: TokenizerSettings, batch_size: int
) -> list[dict[str, np.ndarray]]:
    """Run the backend on ``batch_size`` encodings at a time; give each encoding its own outputs, unpadded.

    Each output is cut back to the encoding's tokens (``outputs[name][row, :length]``), so it has the shape
    the pipelines see when they run that encoding alone.
    """
    if "attention_mask" not in backend.input_names:
        batch_size = 1  # without a mask to hide it, padding would change the outputs
    per_encoding = []
    for first in range(0, len(encodings), batch_size):
        batch = encodings[first : first + batch_size]
        outputs = backend.run(model_feed(batch, settings, backend.input_names))
        for row, encoding in enumerate(batch):
            per_encoding.append({name: value[row, : len(encoding.ids)] for name, value in outputs.items()})
    return per_encoding


def model_feed(
    encodings: Sequence[Encoding], settings: TokenizerSettings, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The int64 feed for ``input_names``: encodings padded on the right to the longest, attention_mask 0.

    Padding always goes on the right, whatever ``settings.padding_side`` says: real tokens then keep their
    positions, so each row gives the outputs the model gives that encoding alone (as the pipelines run it).
    """
    pad_values = {"input_ids": settings.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    unknown = [name for name in input_names if name not in pad_values]
    if unknown:
        raise UnsupportedError(
            f"model inputs {unknown} are not supported; supported inputs: {list(pad_values)}"
        )
    length = max(len(encoding.ids) for encoding in encodings)
    feed = {name: np.full((len(encodings), length), pad_values[name], dtype=np.int64) for name in input_names}
    for row, encoding in enumerate(encodings):
        for name, values in _encoding_inputs(encoding, settings).items():
            if name in feed:
                feed[name][row, : len(values)] = values
    return feed


def _encoding_inputs(encoding: Encoding, settings: TokenizerSettings) -> dict[str, list[int]]:
    # The pipelines feed token_type_ids only when the tokenizer lists them; the model then uses zeros.
    if "token_type_ids" in settings.model_input_names:
        type_ids = encoding.type_ids
    else:
        type_ids = [0] * len(encoding.ids)
    return {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask, "token_type_ids": type_ids}
