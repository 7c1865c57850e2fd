"""The bundle's tokenizer.json must tokenize exactly as the checkpoint's AutoTokenizer does in the running
transformers: the same token ids, type ids and character offsets on every probe text.

transformers 5 rebuilds a tokenizer's normalizer and pre-tokenizer from its class and takes only the vocabulary,
merges and post-processor from the checkpoint's tokenizer.json, so the checkpoint's file can tokenize otherwise
than AutoTokenizer (transformers#45701). The bundle always holds the tokenizer transformers runs (AutoTokenizer's
backend, saved); this check proves the saved file behaves like AutoTokenizer's full call, and records whether the
checkpoint's own file would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from distilrt.errors import VerificationError
from distilrt.tokenization import load_tokenizer

Sample = str | tuple[str, str]  # one text, or a (question, context) pair


@dataclass
class TokenizerVerification:
    against: str  # the AutoTokenizer class and the transformers version
    inputs: int
    matched: int
    # Whether the checkpoint's own tokenizer.json tokenizes like AutoTokenizer: "same", "absent", or the first
    # difference. The bundle does not use that file either way.
    checkpoint_tokenizer_json: str

    @property
    def passed(self) -> bool:
        return self.matched == self.inputs

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def verify_tokenizer(hf_tokenizer, bundle_tokenizer: Path, samples: Sequence[Sample], checkpoint_dir: Path,
                     transformers_version: str) -> TokenizerVerification:
    """Raise VerificationError naming the first sample on which the bundle's file and AutoTokenizer differ."""
    against = f"AutoTokenizer ({type(hf_tokenizer).__name__}, transformers {transformers_version})"
    difference = first_difference(hf_tokenizer, load_tokenizer(bundle_tokenizer), samples)
    if difference is not None:
        raise VerificationError(
            f"the bundle's tokenizer.json does not tokenize like {against}: {difference}. Report it with the "
            "checkpoint name: the runtime would feed the model other tokens than transformers does",
            result={"against": against, "difference": difference},
        )
    return TokenizerVerification(against, len(samples), len(samples), _checkpoint_file_agreement(
        hf_tokenizer, checkpoint_dir / "tokenizer.json", samples))


def first_difference(hf_tokenizer, tokenizer, samples: Sequence[Sample]) -> str | None:
    """The first sample (and token) where ``tokenizer`` (a tokenizers.Tokenizer) and AutoTokenizer differ."""
    for index, sample in enumerate(samples):
        first, second = (sample, None) if isinstance(sample, str) else sample
        # verbose=False: probe contexts may be longer than the model takes; nothing is truncated on either side.
        expected = hf_tokenizer(first, second, return_offsets_mapping=True, return_token_type_ids=True,
                                verbose=False)
        actual = tokenizer.encode(first, second) if second is not None else tokenizer.encode(first)
        for field, want, got in (
            ("token ids", list(expected["input_ids"]), actual.ids),
            ("type ids", list(expected["token_type_ids"]), actual.type_ids),
            ("offsets", [tuple(offset) for offset in expected["offset_mapping"]], actual.offsets),
        ):
            if want != got:
                position = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
                return (f"input {index} ({_describe(sample)}): {field} differ from token {position} "
                        f"(file {got[position:position + 3]}, AutoTokenizer {want[position:position + 3]}; "
                        f"{len(got)} vs {len(want)} tokens)")
    return None


def _checkpoint_file_agreement(hf_tokenizer, path: Path, samples: Sequence[Sample]) -> str:
    if not path.is_file():
        return "absent"
    return first_difference(hf_tokenizer, load_tokenizer(path), samples) or "same"


def _describe(sample: Sample) -> str:
    text = repr(sample)
    return text if len(text) <= 100 else text[:97] + "..."
