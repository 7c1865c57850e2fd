"""distilrt: run verified encoder bundles with numpy, tokenizers and one backend (no torch).

    import distilrt
    qa = distilrt.load("artifacts/distilbert-base-uncased-distilled-squad/fp32")
    qa(question="Who wrote it?", context="It was written by Ada.")
"""

from __future__ import annotations

import logging
from pathlib import Path

from distilrt.bundle import Bundle, read_bundle
from distilrt.errors import BundleError, CapabilityError, DistilrtError, UserInputError
from distilrt.limits import RequestLimits
from distilrt.tokenization import DEFAULT_MAX_BATCH_TOKENS

__version__ = "0.1.0"
__all__ = ["load", "head_for", "read_bundle", "Bundle", "DistilrtError", "RequestLimits", "__version__"]


def load(
    path: str | Path,
    *,
    backend: str | None = None,
    fallback: str | None = None,
    batch_size: int = 8,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    sort_by_length: bool = True,
    check_hashes: bool = True,
    limits: RequestLimits | None = None,
    **backend_options,
):
    """Load a bundle and return its task head: a ``QuestionAnswerer`` or a ``FillMask``.

    ``backend`` defaults to the one the manifest names: onnxruntime, onnxruntime-gpu, tensorrt or
    tensorrt_lean. ``backend_options`` go to that backend (onnxruntime: ``providers``, ``intra_op_num_threads``;
    onnxruntime-gpu: ``device_id``; tensorrt: ``device``, ``module``). An engine that this machine cannot run
    (no GPU, no TensorRT, another TensorRT version or GPU) raises a CapabilityError saying why, unless
    ``fallback="onnx"``: then the bundle's ONNX runs instead (on onnxruntime-gpu where its CUDA provider is
    available, else on the CPU), and the head's ``backend`` names what runs.

    A list input runs in batches of at most ``batch_size`` model windows and ``max_batch_tokens`` tokens
    (padding included), grouped by token length unless ``sort_by_length=False``; results keep the input order.

    ``limits`` bounds the work of one call (inputs, characters, windows, masks, targets, candidate answers;
    defaults: ``RequestLimits()``); a call past one raises a UserInputError naming it.
    """
    from distilrt.backends import open_bundle_model, open_onnx_fallback

    if fallback not in (None, "onnx"):
        raise UserInputError(f"fallback must be None or 'onnx', got {fallback!r}")
    if limits is not None and not isinstance(limits, RequestLimits):  # before a backend is opened
        raise UserInputError(f"limits must be a distilrt.limits.RequestLimits, got {type(limits).__name__}")
    bundle = read_bundle(path, check_hashes=check_hashes)
    try:
        model = open_bundle_model(bundle, backend or bundle.manifest.model_file.backend, **backend_options)
    except CapabilityError as e:
        if fallback is None:
            raise
        model = open_onnx_fallback(bundle)
        logging.getLogger("distilrt").warning("%s; running its ONNX on %s instead (fallback='onnx')", e, model.name)
    return head_for(bundle, model, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                    sort_by_length=sort_by_length, limits=limits)


def head_for(bundle: Bundle, model, *, batch_size: int = 8, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
             sort_by_length: bool = True, limits: RequestLimits | None = None):
    """The task head of ``bundle`` running on an already opened backend ``model``."""
    from distilrt.heads import head_class
    from distilrt.tokenization import load_tokenizer

    if tuple(model.input_names) != bundle.input_names or tuple(model.output_names) != bundle.output_names:
        raise BundleError(
            f"{bundle.model_path} takes {list(model.input_names)} -> {list(model.output_names)} but the manifest "
            f"says {list(bundle.input_names)} -> {list(bundle.output_names)}; rebuild the bundle"
        )
    return head_class(bundle.task)(model, load_tokenizer(bundle.tokenizer_path), bundle.tokenizer_settings,
                                   batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                                   sort_by_length=sort_by_length, limits=limits)
