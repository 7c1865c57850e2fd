"""distilrt: run verified encoder bundles with numpy, tokenizers and one backend (no torch).

    import distilrt
    qa = distilrt.load("artifacts/distilbert-base-uncased-distilled-squad/fp32")
    qa(question="Who wrote it?", context="It was written by Ada.")
"""

from __future__ import annotations

from pathlib import Path

from distilrt.bundle import Bundle, read_bundle
from distilrt.errors import BundleError, DistilrtError

__version__ = "0.1.0"
__all__ = ["load", "head_for", "read_bundle", "Bundle", "DistilrtError", "__version__"]


def load(
    path: str | Path,
    *,
    backend: str | None = None,
    batch_size: int = 8,
    check_hashes: bool = True,
    **backend_options,
):
    """Load a bundle and return its task head: a ``QuestionAnswerer`` or a ``FillMask``.

    ``backend`` defaults to the one the manifest names; ``backend_options`` go to that backend
    (for onnxruntime: ``providers``, ``intra_op_num_threads``).
    """
    from distilrt.backends import open_backend

    bundle = read_bundle(path, check_hashes=check_hashes)
    model = open_backend(backend or bundle.manifest["model"]["backend"], bundle.model_path, **backend_options)
    return head_for(bundle, model, batch_size=batch_size)


def head_for(bundle: Bundle, model, *, batch_size: int = 8):
    """The task head of ``bundle`` running on an already opened backend ``model``."""
    from distilrt.mlm import FillMask
    from distilrt.qa import QuestionAnswerer
    from distilrt.tokenize import load_tokenizer

    if tuple(model.input_names) != bundle.input_names or tuple(model.output_names) != bundle.output_names:
        raise BundleError(
            f"{bundle.model_path} takes {list(model.input_names)} -> {list(model.output_names)} but the manifest "
            f"says {list(bundle.input_names)} -> {list(bundle.output_names)}; rebuild the bundle"
        )
    head_class = {"question-answering": QuestionAnswerer, "fill-mask": FillMask}[bundle.task]
    return head_class(model, load_tokenizer(bundle.tokenizer_path), bundle.tokenizer_settings, batch_size=batch_size)
