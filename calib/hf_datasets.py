"""Data from the Hugging Face `datasets` library, where it is installed: ``datasets:PATH[:CONFIG]:SPLIT``.

The rows are written once to a local file in the format the rest of calib/ reads (SQuAD JSON for question
answering, plain text for fill-mask), so that the set is made, split and hashed exactly like a user's file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from distilrt.errors import CapabilityError, UserInputError

PREFIX = "datasets:"
CACHE_DIR = Path(tempfile.gettempdir()) / "distilrt-datasets"


def is_datasets_source(source: str | None) -> bool:
    return source is not None and source.startswith(PREFIX)


def materialize(source: str, kind: str) -> Path:
    """A local SQuAD-format JSON (kind "squad") or text file (kind "text") holding the dataset split."""
    path, config, split = _parse(source)
    try:
        import datasets
    except ImportError as e:
        raise CapabilityError(f"{source} needs the `datasets` library: pip install datasets (or pass a file)") from e
    try:
        rows = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # hub unreachable, unknown dataset or split: the library's own message says which
        raise UserInputError(f"could not load {source} with the datasets library: {e}") from e
    text = _squad_json(rows, source) if kind == "squad" else _text(rows, source)
    target = CACHE_DIR / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.{'json' if kind == 'squad' else 'txt'}"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(target)
    return target


def _parse(source: str) -> tuple[str, str | None, str]:
    parts = source[len(PREFIX):].split(":")
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise UserInputError(f"{source!r}: write a datasets source as datasets:PATH:SPLIT or datasets:PATH:CONFIG:SPLIT")


def _squad_json(rows, source: str) -> str:
    """SQuAD layout from rows with title, context, question, id and answers {"text": [...]} (the squad schema)."""
    articles: dict[str, dict[str, list]] = {}
    try:
        for row in rows:
            paragraphs = articles.setdefault(row["title"], {})
            qas = paragraphs.setdefault(row["context"], [])
            qas.append({"id": str(row["id"]), "question": row["question"],
                        "answers": [{"text": t} for t in row["answers"]["text"]]})
    except (KeyError, TypeError) as e:
        raise UserInputError(f"{source} does not have the SQuAD columns (title, context, question, id, answers): {e}") from e
    data = [{"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for title, paragraphs in articles.items()]
    return json.dumps({"data": data}, ensure_ascii=False)


def _text(rows, source: str) -> str:
    try:
        return "\n".join(row["text"] for row in rows)
    except (KeyError, TypeError) as e:
        raise UserInputError(f"{source} has no 'text' column for fill-mask data: {e}") from e
