"""Masked-token prediction that gives exactly the outputs of transformers' fill-mask pipeline.

The runtime cannot import transformers, so this module mirrors by hand what transformers 4.57's
``FillMaskPipeline`` does: encode each text whole, softmax the logits at every mask token (the bundle's graph
computes logits only there, given their positions), keep the top_k
tokens (or the top_k of the given targets), and decode the filled-in sequence the way the transformers
tokenizer wrapper decodes (the tokenizers decoder, then its optional clean-up of spaces).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from distilrt.config import check_int, shown
from distilrt.errors import UnsupportedError, UserInputError
from distilrt.heads.base import TaskHead
from distilrt.limits import INT32_MAX
from distilrt.tokenization import MASK_POSITIONS, TokenizerSettings, check_text

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from distilrt.backends import Backend

logger = logging.getLogger(__name__)


class FillMask(TaskHead):
    """Predicts the tokens behind mask tokens, like ``pipeline("fill-mask")``.

    ``fm(text)`` gives a list of ``{"score", "token", "token_str", "sequence"}`` for the text's mask token,
    or one such list per mask token when the text has several; a list of texts gives one result per text.
    """

    def __init__(
        self, backend: Backend, tokenizer: Tokenizer, settings: TokenizerSettings, *, batch_size: int = 8,
        **batching,
    ):
        if settings.mask_token is None or settings.mask_token_id is None:
            raise UnsupportedError("this tokenizer defines no mask token, so its model cannot fill masks")
        super().__init__(backend, tokenizer, settings, batch_size=batch_size, **batching)

    def __call__(
        self,
        inputs: str | list[str],
        *,
        top_k: int = 5,
        targets: str | list[str] | None = None,
        **unknown,
    ) -> list:
        if unknown:
            raise UserInputError(
                f"unknown keyword argument(s) {sorted(unknown)}; fill-mask takes top_k and targets"
            )
        check_top_k(top_k)
        texts = _texts(inputs)
        self._check_inputs(len(texts), "texts")
        for index, text in enumerate(texts):
            check_text("the text" if isinstance(inputs, str) else f"text {index}", text)
        self._check_chars(texts)
        if targets is None:
            # The pipeline's torch.topk fails past the vocabulary; refused here with the range instead.
            vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
            check_int("top_k", top_k, minimum=1, maximum=vocab_size,
                      fix=f"this model predicts one of {vocab_size} tokens")
            target_ids = None
        else:
            target_ids = self._target_ids(targets)
            top_k = min(top_k, len(target_ids))  # as the pipeline does
        encodings = self._tokenizer.encode_batch(texts)
        for index, encoding in enumerate(encodings):
            self._check_encoding(encoding, index if isinstance(inputs, list) else None)
        masks = [encoding.ids.count(self._settings.mask_token_id) for encoding in encodings]
        self._limits.check("max_proposals", sum(masks) * top_k, "the number of predictions this call decodes "
                           f"({sum(masks)} mask tokens x top_k {top_k})", "lower top_k or send fewer masks")
        outputs = self._run(encodings)
        results = [
            self._predictions(np.array(encoding.ids), self._mask_logits(encoding, output["logits"]), top_k, target_ids)
            for encoding, output in zip(encodings, outputs)
        ]
        return results[0] if len(results) == 1 else results

    def _check_encoding(self, encoding: Encoding, index: int | None) -> None:
        where = "" if index is None else f" (text {index})"
        mask = self._settings.mask_token
        if self._settings.mask_token_id not in encoding.ids:
            raise UserInputError(
                f"no mask token {mask} found in the input{where}; put {mask} where a token is to be predicted"
            )
        if len(encoding.ids) > self._settings.model_max_length:
            raise UserInputError(
                f"the input{where} is {len(encoding.ids)} tokens long, more than the model's "
                f"{self._settings.model_max_length}; shorten it"
            )
        self._limits.check("max_masks", encoding.ids.count(self._settings.mask_token_id),
                           f"the number of {mask} tokens in the input{where}", "send fewer masks per text")

    def _target_ids(self, targets: str | list[str]) -> np.ndarray:
        """The pipeline's get_target_ids: vocabulary entries, else the first token of the target encoded."""
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not all(isinstance(target, str) for target in targets):
            raise UserInputError(f"targets must be a string or a list of strings, got {shown(targets)}")
        self._limits.check("max_targets", len(targets), "the number of targets", "send fewer targets")
        longest = max((len(target) for target in targets), default=0)
        self._limits.check("max_target_chars", longest, "the length of the longest target in characters",
                           "send targets that are single words or tokens")
        for target in targets:
            check_text("a target", target)
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        ids = []
        for target in targets:
            token_id = vocab.get(target)
            if token_id is None:
                token_id = self._first_token(target)
            if token_id is not None:
                ids.append(token_id)
        if not ids:
            raise UserInputError(
                f"none of the targets {targets!r} maps to a token; "
                "pass words or tokens of the model's vocabulary"
            )
        # The pipeline de-duplicates with list(set(...)); that order decides between equal scores.
        return np.array(list(set(ids)))

    def _first_token(self, target: str) -> int | None:
        pieces = self._tokenizer.encode(target, add_special_tokens=False).ids
        if not pieces:
            logger.warning("target %r is not in the vocabulary and encodes to nothing; ignoring it", target)
            return None
        logger.warning(
            "target %r is not in the vocabulary; using its first token %r",
            target,
            self._tokenizer.id_to_token(pieces[0]),
        )
        return pieces[0]

    def _mask_logits(self, encoding: Encoding, logits: np.ndarray) -> np.ndarray:
        """The logits at the text's mask tokens, [masks, vocab]: what a masked-positions graph gives, or picked
        from the logits of every token (bundles built before masked-positions graphs, and the PyTorch model)."""
        logits = np.asarray(logits, dtype=np.float32)
        if MASK_POSITIONS in self._backend.input_names:
            return logits
        return logits[np.nonzero(np.array(encoding.ids) == self._settings.mask_token_id)[0]]

    def _predictions(
        self, input_ids: np.ndarray, mask_logits: np.ndarray, top_k: int, target_ids: np.ndarray | None
    ) -> list:
        """The pipeline's postprocess for one text: a ranked list per mask token (the list alone for one)."""
        mask_positions = np.nonzero(input_ids == self._settings.mask_token_id)[0]
        probabilities = _softmax(mask_logits)
        if target_ids is not None:
            probabilities = probabilities[:, target_ids]
        # Decoding skips special tokens only with one mask, so that the other masks stay visible.
        single_mask = len(mask_positions) == 1
        rows = []
        for position, row in zip(mask_positions, probabilities):
            best = np.argsort(-row, kind="stable")[:top_k]
            token_ids = best if target_ids is None else target_ids[best]
            rows.append(
                [
                    self._proposal(input_ids, position, int(token_id), score.item(), single_mask)
                    for token_id, score in zip(token_ids, row[best])
                ]
            )
        return rows[0] if single_mask else rows

    def _proposal(
        self, input_ids: np.ndarray, position: int, token_id: int, score: float, single_mask: bool
    ) -> dict:
        filled = input_ids.copy()
        filled[position] = token_id
        # The pipeline drops every pad id before decoding, a predicted one included.
        filled = filled[filled != self._settings.pad_token_id]
        return {
            "score": score,
            "token": token_id,
            "token_str": self._decode([token_id], skip_special_tokens=False),
            "sequence": self._decode(filled.tolist(), skip_special_tokens=single_mask),
        }

    def _decode(self, ids: list[int], *, skip_special_tokens: bool) -> str:
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self._settings.clean_up_tokenization_spaces else text


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization: drop the spaces English tokenizers leave before punctuation."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def check_top_k(top_k) -> None:
    """The bounds of top_k that need no model (the served tensor's int32); the head also caps it at the
    vocabulary."""
    check_int("top_k", top_k, minimum=1, maximum=INT32_MAX)


def _texts(inputs) -> list[str]:
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise UserInputError(f"fill-mask takes a string or a list of strings, got {type(inputs).__name__}")
    return texts


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)
