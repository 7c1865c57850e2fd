"""Calibration and evaluation data, read from real sets (SQuAD-format JSON, plain text), seeded and hashed."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
SQUAD_DEV = DATA_DIR / "dev-v1.1.json.gz"
WIKITEXT_VALID = DATA_DIR / "wikitext-2-valid.txt"
WIKITEXT_TEST = DATA_DIR / "wikitext-2-test.txt"
