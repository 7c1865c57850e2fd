"""SQuAD-format question answering data (any file in the SQuAD v1.1 JSON layout, optionally gzipped)."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from distilrt.errors import UserInputError


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]


def read_squad(path: str | Path) -> list[SquadQuestion]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"SQuAD file {path} does not exist; pass the path of a SQuAD-format JSON file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            document = json.load(f)
        questions = [
            SquadQuestion(qa["id"], article["title"], qa["question"], paragraph["context"],
                          tuple(a["text"] for a in qa.get("answers", [])))
            for article in document["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserInputError(
            f"{path} is not SQuAD-format JSON ({type(e).__name__}: {e}); expected "
            f'{{"data": [{{"title", "paragraphs": [{{"context", "qas": [{{"id", "question", "answers"}}]}}]}}]}}'
        ) from e
    if not questions:
        raise UserInputError(f"{path} holds no questions; pass a SQuAD-format file with at least one question")
    return questions


def sample_questions(questions: list[SquadQuestion], count: int, seed: int) -> list[SquadQuestion]:
    """A seeded sample, in file order so that the same seed always gives the same list."""
    if count >= len(questions):
        return list(questions)
    picked = sorted(random.Random(seed).sample(range(len(questions)), count))
    return [questions[i] for i in picked]


def long_context_questions(questions: list[SquadQuestion], count: int, seed: int, min_chars: int = 2400) -> list[SquadQuestion]:
    """Questions whose context is their paragraph joined with the paragraphs after it (wrapping round the
    article) until it has ``min_chars`` characters: longer than one model window, so the stride-and-merge path
    runs."""
    by_title: dict[str, list[str]] = {}
    for q in questions:
        contexts = by_title.setdefault(q.title, [])
        if not contexts or contexts[-1] != q.context:
            contexts.append(q.context)
    result = []
    for q in sample_questions(questions, count, seed):
        contexts = by_title[q.title]
        first = contexts.index(q.context)
        window = [q.context]
        for offset in range(1, len(contexts)):
            if sum(map(len, window)) >= min_chars:
                break
            window.append(contexts[(first + offset) % len(contexts)])
        result.append(SquadQuestion(q.id, q.title, q.question, "\n".join(window), q.answers))
    return result
