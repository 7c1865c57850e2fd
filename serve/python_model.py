"""What runs inside Triton's Python backend for a served bundle. The repository's model.py (the template
python_backend_model.py) only hands Triton's requests to ``ServedModel``, so the logic is tested here.

Two forms, chosen by the model's ``form`` parameter:
- ``bundle``: the whole bundle in this process (``distilrt.load``): tokenize, run the backend, post-process.
- ``bls``: tokenize and post-process here with the bundle's own head, and run the model as a separate Triton
  model (onnxruntime_onnx or tensorrt_plan) through a BLS request: the head's backend is that request.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from distilrt.backends import Closable
from distilrt.errors import BackendError, DistilrtError, ServerError, UnsupportedError, UserInputError, one_line
from distilrt.serve.batching import answer_batch
from distilrt.serve.protocol import OUTPUT, encode_answers, read_batch

logger = logging.getLogger("distilrt.serve")


def parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """A Triton model config's ``parameters`` as plain strings."""
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


class ServedModel(Closable):
    """A bundle's task head answering Triton requests; ``pb_utils`` is triton_python_backend_utils."""

    def __init__(self, model_config: Mapping[str, Any], version_dir: Path, pb_utils):
        self._pb_utils = pb_utils
        params = parameters(model_config)
        bundle = Path(params.get("bundle", "bundle"))
        bundle = bundle if bundle.is_absolute() else Path(version_dir) / bundle
        self.max_text_bytes = int(params["max_text_bytes"])
        # Triton's batches hold at most max_batch_size requests: with single-window inputs, one backend run each.
        batch_size = max(1, int(model_config.get("max_batch_size", 0)))
        form = params.get("form", "bundle")
        if form == "bundle":
            self.head, self.task = _bundle_head(bundle, params, batch_size)
        elif form == "bls":
            self.head, self.task = _bls_head(bundle, params, pb_utils)
        else:
            raise ServerError(f"model parameter form is {form!r}; distilrt's Python model runs 'bundle' or 'bls'")

    def execute(self, requests: list) -> list:
        """One response per request, in order: an answer per example, or that request's own error.

        A request may hold several examples (shape [N, 1]); Triton's batch, all requests together, holds at most
        max_batch_size examples, which the head runs as one batch.
        """
        examples, counts = [], []
        for request in requests:
            try:
                decoded = read_batch(self.task, lambda name, r=request: _input(self._pb_utils, r, name),
                                     self.max_text_bytes)
            except UserInputError as e:
                decoded = [e]
            examples.extend(decoded)
            counts.append(len(decoded))
        try:
            answers = answer_batch(self.head, self.task, examples)
        except Exception as e:  # a bug: every request of this batch is told, and the model keeps serving
            logger.error("distilrt: a batch of %d requests failed:\n%s", len(requests), traceback.format_exc())
            answers = [ServerError(f"internal error in the distilrt model ({type(e).__name__}: {one_line(e)})")] \
                * len(examples)
        responses, start = [], 0
        for count in counts:
            responses.append(self._response(answers[start:start + count]))
            start += count
        return responses

    def _response(self, answers: list):
        """One request's response: its examples' answers, or the first error among them."""
        pb_utils = self._pb_utils
        for index, answer in enumerate(answers):
            if isinstance(answer, DistilrtError):
                where = f"example {index} of {len(answers)}: " if len(answers) > 1 else ""
                return pb_utils.InferenceResponse(output_tensors=[],
                                                  error=triton_error(pb_utils, where + one_line(answer), answer))
        element = np.array([[encode_answers(answer)] for answer in answers], dtype=np.object_)  # (batch N, 1 each)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, element)])

    def close(self) -> None:
        self.head.close()


def triton_error(pb_utils, message: str, error: DistilrtError):
    """The client's own mistakes as Triton's INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT); anything else is
    the server's fault (INTERNAL: HTTP 500, gRPC INTERNAL)."""
    client_fault = isinstance(error, (UserInputError, UnsupportedError))
    code = pb_utils.TritonError.INVALID_ARG if client_fault else pb_utils.TritonError.INTERNAL
    return pb_utils.TritonError(message, code)


def _input(pb_utils, request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _bundle_head(bundle: Path, params: dict[str, str], batch_size: int):
    import distilrt

    backend = params.get("backend") or None
    options = {}
    # ONNX Runtime's intra-op threads; none given: the backend's default, one per physical core this process may
    # use (distilrt.host). Instances are processes that share those cores: with several, give threads.
    if params.get("threads"):
        options["intra_op_num_threads"] = int(params["threads"])
    head = distilrt.load(bundle, backend=backend, batch_size=batch_size, **options)
    return head, distilrt.read_bundle(bundle, check_hashes=False).task


def _bls_head(bundle: Path, params: dict[str, str], pb_utils):
    """The head on a BLS backend: tokenizer.json and manifest.json are here, the model is Triton's."""
    import json

    from distilrt.heads import head_class
    from distilrt.manifest import MANIFEST_NAME, Manifest
    from distilrt.tokenization import load_tokenizer

    manifest = Manifest.checked(json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8")), bundle)
    backend = BlsBackend(pb_utils, params["model"], manifest.input_names, manifest.output_names)
    head = head_class(manifest.task)(backend, load_tokenizer(bundle / manifest.tokenizer_file),
                                     manifest.tokenizer_settings, batch_size=int(params["model_max_batch_size"]))
    return head, manifest.task


class BlsBackend(Closable):
    """The Backend protocol over a Triton model: each run is one BLS inference request."""

    def __init__(self, pb_utils, model_name: str, input_names, output_names):
        self.name = f"triton:{model_name}"
        self._pb_utils = pb_utils
        self._model_name = model_name
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        pb_utils = self._pb_utils
        inputs = [pb_utils.Tensor(name, np.ascontiguousarray(feed[name], dtype=np.int64)) for name in self.input_names]
        response = pb_utils.InferenceRequest(model_name=self._model_name, inputs=inputs,
                                             requested_output_names=list(self.output_names)).exec()
        if response.has_error():
            raise BackendError(f"Triton model {self._model_name!r} failed: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in self.output_names}

    def close(self) -> None:
        pass  # the model belongs to Triton
