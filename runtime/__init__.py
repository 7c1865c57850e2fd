"""distilrt: run verified encoder bundles with numpy, tokenizers and one backend (no torch)."""

__version__ = "0.1.0"
