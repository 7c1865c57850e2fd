"""Tokenizer loading and the settings the task heads need, shared by question answering and fill-mask.

The bundle's tokenizer.json is the checkpoint's own fast tokenizer (the `tokenizers` library object that
transformers wraps), so encoding is byte-for-byte the same as in transformers. What transformers adds on top
(which inputs the model takes, padding side, special-token ids, decode clean-up) is recorded at build time
as ``TokenizerSettings`` in the manifest, because the runtime cannot import transformers to ask it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    def from_dict(cls, data: Any, where: str = "manifest.json") -> TokenizerSettings:
        """The settings a manifest records (``tokenizer.settings``), each field checked for type and range:
        BundleError naming the field otherwise."""
        from distilrt.manifest_schema import MAX_INT, Fields, fail

        fields_ = Fields(data, "tokenizer.settings", where)
        names = fields_.list("model_input_names", nonempty=True)
        if not all(isinstance(name, str) and name for name in names):
            raise fail(fields_.name("model_input_names"), "a list of input names", names, where)
        return cls(
            model_input_names=tuple(names),
            padding_side=fields_.str("padding_side", choices=("left", "right")),
            pad_token_id=fields_.int("pad_token_id", minimum=0),
            cls_token_id=fields_.int("cls_token_id", minimum=0, nullable=True),
            mask_token=fields_.str("mask_token", nullable=True),
            mask_token_id=fields_.int("mask_token_id", minimum=0, nullable=True),
            model_max_length=fields_.int("model_max_length", minimum=1, maximum=MAX_INT),
            clean_up_tokenization_spaces=fields_.bool("clean_up_tokenization_spaces"),
        )


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


# Fill-mask graphs take the positions whose logits they compute, [batch, masks] int64, and give logits
# [batch, masks, vocab]: the vocabulary projection runs only where a mask is (docs/design.md#masked-positions).
MASK_POSITIONS = "mask_positions"
# A batch of windows holds at most this many tokens, padding included, unless the caller sets its own budget.
DEFAULT_MAX_BATCH_TOKENS = 4096


def run_in_batches(
    backend: Backend,
    encodings: Sequence[Encoding],
    settings: TokenizerSettings,
    batch_size: int,
    *,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    sort_by_length: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Run the backend on the encodings in batches; give each encoding its own outputs, unpadded, in input order.

    With ``sort_by_length`` the encodings are grouped by token length, so a batch pads its rows to about their
    own length instead of to the longest of whatever arrived next to them; a batch holds at most ``batch_size``
    encodings and ``max_batch_tokens`` tokens counting padding (one longer encoding runs alone). Each output is
    cut back to the encoding's tokens (``outputs[name][row, :length]``), or to its mask positions for a graph
    that takes them, so it has the shape the pipelines see when they run that encoding alone.
    """
    if "attention_mask" not in backend.input_names:
        batch_size = 1  # without a mask to hide it, padding would change the outputs
    lengths = [len(encoding.ids) for encoding in encodings]
    per_encoding: list[dict[str, np.ndarray]] = [{} for _ in encodings]
    for indices in length_batches(lengths, batch_size, max_batch_tokens, sort_by_length=sort_by_length):
        batch = [encodings[index] for index in indices]
        feed = model_feed(batch, settings, backend.input_names)
        outputs = backend.run(feed)
        kept = _mask_counts(batch, settings) if MASK_POSITIONS in feed else [lengths[index] for index in indices]
        for row, index in enumerate(indices):
            per_encoding[index] = {name: value[row, : kept[row]] for name, value in outputs.items()}
    return per_encoding


def length_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int, *, sort_by_length: bool = True
) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches of at most ``batch_size`` items whose padded size (items x
    the longest) stays within ``max_batch_tokens``; sorted by length first (stable, so equal lengths keep their
    order), or in the given order without ``sort_by_length``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if sort_by_length else range(len(lengths))
    batches: list[list[int]] = []
    longest = 0
    for index in order:
        grown = max(longest, lengths[index])
        if batches and len(batches[-1]) < batch_size and grown * (len(batches[-1]) + 1) <= max_batch_tokens:
            batches[-1].append(index)
            longest = grown
        else:
            batches.append([index])
            longest = lengths[index]
    return batches


def model_feed(
    encodings: Sequence[Encoding], settings: TokenizerSettings, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The int64 feed for ``input_names``: encodings padded on the right to the longest, attention_mask 0, and
    for a fill-mask graph the positions of each encoding's mask tokens (``mask_positions``).

    Padding always goes on the right, whatever ``settings.padding_side`` says: real tokens then keep their
    positions, so each row gives the outputs the model gives that encoding alone (as the pipelines run it).
    """
    pad_values = {"input_ids": settings.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    unknown = [name for name in input_names if name not in pad_values and name != MASK_POSITIONS]
    if unknown:
        raise UnsupportedError(
            f"model inputs {unknown} are not supported; supported inputs: {[*pad_values, MASK_POSITIONS]}"
        )
    length = max(len(encoding.ids) for encoding in encodings)
    feed = {name: np.full((len(encodings), length), pad_values[name], dtype=np.int64)
            for name in input_names if name != MASK_POSITIONS}
    for row, encoding in enumerate(encodings):
        for name, values in _encoding_inputs(encoding, settings).items():
            if name in feed:
                feed[name][row, : len(values)] = values
    if MASK_POSITIONS in input_names:
        feed[MASK_POSITIONS] = padded_positions(
            [np.flatnonzero(np.array(encoding.ids) == _mask_token_id(settings)) for encoding in encodings])
    return feed


def padded_positions(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's positions, padded on the right with position 0 to the most any row has (at least one); the
    logits computed at a padding position are cut off again after the run."""
    width = max([1, *(len(row) for row in rows)])
    positions = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        positions[index, : len(row)] = row
    return positions


def _mask_counts(encodings: Sequence[Encoding], settings: TokenizerSettings) -> list[int]:
    mask_token_id = _mask_token_id(settings)
    return [encoding.ids.count(mask_token_id) for encoding in encodings]


def _mask_token_id(settings: TokenizerSettings) -> int:
    if settings.mask_token_id is None:
        raise UnsupportedError(f"the model takes {MASK_POSITIONS} but its tokenizer defines no mask token")
    return settings.mask_token_id


def _encoding_inputs(encoding: Encoding, settings: TokenizerSettings) -> dict[str, list[int]]:
    # The pipelines feed token_type_ids only when the tokenizer lists them; the model then uses zeros.
    if "token_type_ids" in settings.model_input_names:
        type_ids = encoding.type_ids
    else:
        type_ids = [0] * len(encoding.ids)
    return {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask, "token_type_ids": type_ids}
