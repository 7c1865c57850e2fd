"""The inputs a bundle's runtime is checked on against the transformers pipeline: real text, seeded."""

from __future__ import annotations

from distilrt.calib import SQUAD_DEV, WIKITEXT_VALID
from distilrt.calib.squad import long_context_questions, read_squad, sample_questions
from distilrt.calib.text import mask_words, read_sentences

Probe = tuple[tuple, dict]  # positional args, keyword args of one call

# Texts where tokenizers tend to disagree: accents (composed and combining), ligatures, CJK, emoji, odd spacing,
# punctuation runs, digits and special tokens written in the text ({mask}: the checkpoint's mask token).
TOKENIZER_EDGE_TEXTS = (
    "Café naïve Zoë ordered crème brûlée and a piña colada 🍹 in Zürich.",
    "The letter e\u0301 has a combining accent; ﬁnance starts with the ﬁ ligature; Straße has ß.",
    "東京は日本の首都です。Кто написал «Войну и мир»? Ærø, Łódź, Dvořák.",
    "   leading, trailing   and  doubled   spaces\tand\ttabs\nand new lines   ",
    "It 's 1,000.50 $ -- \"quoted\" (bracketed) [square] {{curly}} ... !!! ??? e-mail@example.com",
    "{mask}",
    "Paris is the {mask} of France.",
    "a{mask}b {mask}{mask} ({mask}) {mask}.",
    "[CLS] [SEP] [PAD] [UNK] <s> </s> <pad> <unk> literally in the text",
)


def question_answering_probes(count: int, seed: int) -> list[Probe]:
    """Single paragraphs, multi-paragraph contexts longer than one window, and top_k > 1."""
    questions = read_squad(SQUAD_DEV)
    n_long = max(1, count // 4)
    short = sample_questions(questions, count - n_long, seed)
    long = long_context_questions(questions, n_long, seed + 1)
    probes = []
    for i, q in enumerate(short + long):
        kwargs = {"question": q.question, "context": q.context}
        if i % 3 == 1:
            kwargs["top_k"] = 3
        probes.append(((), kwargs))
    return probes


def fill_mask_probes(mask_token: str, count: int, seed: int) -> list[Probe]:
    """WikiText sentences with one or two masked words."""
    return [((text,), {"top_k": 5}) for text in mask_words(read_sentences(WIKITEXT_VALID), mask_token, count, seed)]


def task_probes(task: str, mask_token: str | None, count: int, seed: int) -> list[Probe]:
    if task == "question-answering":
        return question_answering_probes(count, seed)
    return fill_mask_probes(mask_token, count, seed)


def tokenizer_samples(task: str, probes: list[Probe], mask_token: str | None) -> list[str | tuple[str, str]]:
    """What the tokenizer check encodes: the probes' texts (question-context pairs for QA) and the edge texts."""
    edge = [text.format(mask=mask_token or "[MASK]") for text in TOKENIZER_EDGE_TEXTS]
    if task == "question-answering":
        pairs = [(kwargs["question"], kwargs["context"]) for _, kwargs in probes]
        return pairs + [(question, context) for question, context in zip(edge, edge[1:] + edge[:1])]
    return [args[0] for args, _ in probes] + edge
