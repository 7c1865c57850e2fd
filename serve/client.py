"""A thin client for served bundles over tritonclient (HTTP or gRPC): text in, the pipeline's dicts out.

    from distilrt.serve.client import Client
    with Client("127.0.0.1:8000") as client:                       # or Client("127.0.0.1:8001", protocol="grpc")
        client.question_answering("qa", question="Who wrote it?", context="Ada wrote it.", top_k=2)
        client.fill_mask("mlm", "Paris is the [MASK] of France.", top_k=3)

Every call has a timeout; a refused request, an unreachable server or a timeout raises ServerError with the
server's message. One Client per thread: tritonclient's clients are not shared between threads here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilrt.backends import Closable
from distilrt.errors import CapabilityError, ServerError, UserInputError, one_line
from distilrt.serve.protocol import OUTPUT, decode_answers, inputs_of

PROTOCOLS = ("http", "grpc")
_NUMPY_TYPES = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_}


class Client(Closable):
    def __init__(self, url: str = "127.0.0.1:8000", *, protocol: str = "http", timeout_s: float = 30.0):
        if protocol not in PROTOCOLS:
            raise UserInputError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        try:
            if protocol == "http":
                import tritonclient.http as module
            else:
                import tritonclient.grpc as module
            from tritonclient.utils import InferenceServerException
        except ImportError as e:
            raise CapabilityError(f'the distilrt client needs tritonclient ({e}): pip install "distilrt[serve]"') from e
        self._module = module
        self._exception = InferenceServerException
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol == "http":
            self._client = module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self._client = module.InferenceServerClient(url)

    def question_answering(self, model: str, question: str, context: str, **options) -> dict | list:
        """What ``distilrt.load(bundle)(question=..., context=..., **options)`` gives, from the server."""
        return self.infer(model, "question-answering", {"question": question, "context": context, **options})

    def fill_mask(self, model: str, text: str, **options) -> list:
        """What ``distilrt.load(bundle)(text, **options)`` gives, from the server."""
        return self.infer(model, "fill-mask", {"text": text, **options})

    def infer(self, model: str, task: str, values: dict[str, Any]) -> Any:
        """Send one example (inputs by name; str or bytes for text) and decode its answers."""
        specs = {spec.name: spec for spec in inputs_of(task)}
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise UserInputError(f"{task} takes {list(specs)}; unknown input(s) {unknown}")
        inputs = [self._input(specs[name], value) for name, value in values.items() if value is not None]
        outputs = [self._module.InferRequestedOutput(OUTPUT)]
        try:
            if self.protocol == "http":
                result = self._client.infer(model, inputs, outputs=outputs)  # network_timeout bounds it
            else:
                result = self._client.infer(model, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except self._exception as e:
            raise ServerError(f"model {model!r}: {one_line(e.message() or e)}") from e
        except Exception as e:  # connection refused, reset, or a socket timeout (geventhttpclient, grpc)
            raise ServerError(f"model {model!r}: no answer from the server ({type(e).__name__}: {one_line(e)})") from e
        return decode_answers(result.as_numpy(OUTPUT).reshape(-1)[0])

    def _input(self, spec, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        array = np.array(values, dtype=_NUMPY_TYPES[spec.datatype]).reshape(1, -1)  # a batch of one request
        tensor = self._module.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def ready(self, model: str | None = None) -> bool:
        try:
            return self._client.is_model_ready(model) if model else self._client.is_server_ready()
        except Exception:  # unreachable counts as not ready
            return False

    def close(self) -> None:
        self._client.close()
