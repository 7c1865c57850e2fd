"""Tokenizer loading and the settings the task heads need, shared by question answering and fill-mask.

The bundle's tokenizer.json is the checkpoint's own fast tokenizer (the `tokenizers` library object that
transformers wraps), so encoding is byte-for-byte the same as in transformers. What transformers adds on top
(which inputs the model takes, padding side, special-token ids, decode clean-up) is recorded at build time
as ``TokenizerSettings`` in the manifest, because the runtime cannot import transformers to ask it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from distilrt.errors import BundleError


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
    def from_dict(cls, data: Mapping[str, Any]) -> "TokenizerSettings":
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
