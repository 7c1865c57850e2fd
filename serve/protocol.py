"""What a served bundle takes and gives: Triton tensors of text in, the pipeline's answers as JSON out.

Each item of a request is one example. Question answering takes ``question`` and ``context``; fill-mask takes
``text``. The pipeline's keyword arguments are optional tensors of the same names. Every tensor has a batch
axis (``max_batch_size`` > 0, so Triton's dynamic batcher can group requests): a request of shape [N, 1] holds
N examples (N up to max_batch_size), one element each, except ``targets``, a list of strings per example.
The answer is one ``answers`` element per example: the pipeline's result for it as UTF-8 JSON, exactly what
``distilrt.load(bundle)(...)`` returns for it.

The checks here run on each request before it joins a batch, so one bad request is answered with its own
error and cannot fail the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilrt.config import is_int, shown
from distilrt.errors import UnsupportedError, UserInputError
from distilrt.heads import check_options
from distilrt.manifest import TASKS

OUTPUT = "answers"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model, as Triton's model configuration names it."""

    name: str
    data_type: str  # Triton's config type: TYPE_STRING, TYPE_INT32, TYPE_BOOL
    dims: tuple[int, ...] = (1,)  # without the batch axis
    optional: bool = False

    @property
    def datatype(self) -> str:
        """The type's name in requests (KServe v2): BYTES, INT32, BOOL."""
        return {"TYPE_STRING": "BYTES"}.get(self.data_type, self.data_type.removeprefix("TYPE_"))


# The pipeline's keyword arguments, each an optional tensor (question answering: QAOptions' fields).
_QA_OPTIONS = (("top_k", "TYPE_INT32"), ("doc_stride", "TYPE_INT32"), ("max_answer_len", "TYPE_INT32"),
               ("max_seq_len", "TYPE_INT32"), ("max_question_len", "TYPE_INT32"),
               ("handle_impossible_answer", "TYPE_BOOL"), ("align_to_words", "TYPE_BOOL"))
INPUTS: dict[str, tuple[TensorSpec, ...]] = {
    "question-answering": (
        TensorSpec("question", "TYPE_STRING"),
        TensorSpec("context", "TYPE_STRING"),
        *(TensorSpec(name, data_type, optional=True) for name, data_type in _QA_OPTIONS),
    ),
    "fill-mask": (
        TensorSpec("text", "TYPE_STRING"),
        TensorSpec("top_k", "TYPE_INT32", optional=True),
        TensorSpec("targets", "TYPE_STRING", dims=(-1,), optional=True),
    ),
}
OUTPUTS = (TensorSpec(OUTPUT, "TYPE_STRING"),)
assert tuple(INPUTS) == TASKS
# Bounds of the integer options a request may give: an INT32 can ask for 2**31 answers or tokens, which no
# head needs and which would cost the server memory before the head's own checks run. doc_stride may be 0.
MAX_OPTION = 65536
_OPTION_MINIMUM = {"doc_stride": 0}


@dataclass(frozen=True)
class Request:
    """One decoded example: the texts for the head and the options it was given (hashable, to group by)."""

    texts: tuple[str, ...]  # question, context | text
    options: tuple[tuple[str, Any], ...]

    def option_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in self.options}


def inputs_of(task: str) -> tuple[TensorSpec, ...]:
    if task not in INPUTS:
        raise UnsupportedError(f"no served form for task {task!r}; distilrt serves {list(INPUTS)}")
    return INPUTS[task]


def read_batch(task: str, get: Callable[[str], np.ndarray | None], max_text_bytes: int) -> list[Request]:
    """Decode and check one Triton request of N examples (its inputs' batch axis): one Request per example.

    Raises UserInputError for the first bad example, naming it when there are several.
    """
    arrays = {spec.name: get(spec.name) for spec in inputs_of(task)}
    arrays = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
    sizes = {name: (array.shape[0] if array.ndim else 1) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise UserInputError(f"the inputs' batch sizes differ ({sizes}); send every input with one row per example")
    count = next(iter(sizes.values()), 1)
    if count < 1:
        raise UserInputError("the request holds no example (batch size 0); send at least one")
    requests = []
    for index in range(count):
        def item(name: str, index=index):
            array = arrays.get(name)
            return None if array is None else (array if array.ndim == 0 else array[index:index + 1])

        try:
            requests.append(read_request(task, item, max_text_bytes))
        except UserInputError as e:
            if count == 1:
                raise
            raise UserInputError(f"example {index} of {count}: {e}") from None
    return requests


def read_request(task: str, get: Callable[[str], np.ndarray | None], max_text_bytes: int) -> Request:
    """Decode and check one example; ``get(name)`` gives an input's array (batch axis of 1) or None if absent.

    Raises UserInputError naming the input and the fix. Triton itself refuses unknown models, missing required
    inputs and wrong data types before a request gets here.
    """
    texts, options = [], []
    for spec in inputs_of(task):
        value = get(spec.name)
        if value is None:
            if not spec.optional:  # Triton checks this too; kept so a direct caller gets the same error
                raise UserInputError(f"the request lacks input {spec.name!r}; send it as {spec.datatype}")
            continue
        array = np.asarray(value)
        if spec.data_type == "TYPE_STRING" and spec.dims == (1,):
            texts.append(_text(spec.name, _single(spec, array), max_text_bytes))
        elif spec.data_type == "TYPE_STRING":
            options.append((spec.name, tuple(_text(spec.name, item, max_text_bytes) for item in array.reshape(-1))))
        elif spec.data_type == "TYPE_BOOL":
            options.append((spec.name, bool(_single(spec, array))))
        else:
            options.append((spec.name, _bounded(spec.name, _integer(spec, _single(spec, array)))))
    check_options(task, dict(options))  # the head's own checks: bad values are refused per request
    return Request(tuple(texts), tuple(options))


def _integer(spec: TensorSpec, value) -> int:
    if not is_int(value):
        raise UserInputError(f"input {spec.name!r} must be an integer ({spec.datatype}), got {shown(value)}")
    return int(value)


def _bounded(name: str, value: int) -> int:
    minimum = _OPTION_MINIMUM.get(name, 1)
    if not minimum <= value <= MAX_OPTION:
        raise UserInputError(f"{name} must be an integer from {minimum} to {MAX_OPTION}, got {value}")
    return value


def _single(spec: TensorSpec, array: np.ndarray):
    if array.size != 1:
        raise UserInputError(f"input {spec.name!r} must hold one element per request, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _text(name: str, value, max_text_bytes: int) -> str:
    """A request's BYTES element as text: UTF-8, not empty, at most max_text_bytes."""
    if isinstance(value, str):  # some clients' arrays hold str; Triton delivers bytes
        value = value.encode("utf-8", "surrogatepass")
    if not isinstance(value, (bytes, np.bytes_)):
        raise UserInputError(f"input {name!r} must be BYTES (UTF-8 text), got {type(value).__name__}")
    if len(value) > max_text_bytes:
        raise UserInputError(
            f"input {name!r} is {len(value)} bytes, more than this server's limit of {max_text_bytes} "
            "(distilrt serve --max-text-bytes); send a shorter text or raise the limit")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserInputError(
            f"input {name!r} is not valid UTF-8 (byte {value[e.start]:#04x} at offset {e.start}); "
            "send the text encoded as UTF-8") from None
    if not text:  # the head's own rule; whitespace is text to it
        raise UserInputError(f"input {name!r} is empty; send a non-empty {name}")
    return text


def encode_answers(result) -> bytes:
    """The pipeline's result for one example as the ``answers`` element: UTF-8 JSON."""
    return json.dumps(result, ensure_ascii=False).encode("utf-8")


def decode_answers(element) -> Any:
    """The inverse of encode_answers, for clients."""
    return json.loads(bytes(element).decode("utf-8"))
