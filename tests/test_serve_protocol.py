"""The serving protocol and batching without a server: request checks, and a batch through one head call
answered per request (errors included) exactly as each request alone. Needs only the runtime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MLM_NAME, QA_NAME

import distilrt
from distilrt.errors import BackendError, UserInputError
from distilrt.serve.batching import answer_batch
from distilrt.serve.protocol import Request, decode_answers, encode_answers, read_request


def _get(values: dict):
    arrays = {name: np.array([value if isinstance(value, list) else [value]], dtype=np.object_
                             if isinstance(value, (bytes, list)) else None) for name, value in values.items()}
    return arrays.get


@pytest.mark.parametrize("values, message", [
    ({"question": b"Who?"}, "lacks input 'context'"),
    ({"question": b"", "context": b"x"}, "input 'question' is empty"),
    ({"question": b"Who?", "context": b"ab\xc3("}, r"not valid UTF-8 \(byte 0xc3 at offset 2\)"),
    ({"question": b"Who?", "context": b"x" * 101}, "101 bytes, more than this server's limit of 100"),
    ({"question": 7, "context": b"x"}, "must be BYTES"),
])
def test_read_request_refuses_bad_input_naming_it(values, message):
    with pytest.raises(UserInputError, match=message):
        read_request("question-answering", _get(values), max_text_bytes=100)


def test_read_request_takes_options_and_lists():
    request = read_request("question-answering", _get({"question": b"Who?", "context": b"Ada wrote it.",
                                                       "top_k": np.int32(2), "handle_impossible_answer": True}), 100)
    assert request.texts == ("Who?", "Ada wrote it.")
    assert request.option_dict() == {"top_k": 2, "handle_impossible_answer": True}
    fill = read_request("fill-mask", _get({"text": b"A [MASK].", "targets": [b"cat", b"dog"]}), 100)
    assert fill.option_dict() == {"targets": ["cat", "dog"]}


def test_answers_round_trip_as_utf8_json():
    answer = [{"score": 0.25, "token": 7, "token_str": "café", "sequence": "a café ☕"}]
    assert decode_answers(encode_answers(answer)) == answer
    assert "café".encode() in encode_answers(answer)  # UTF-8, not \\u escapes


@pytest.fixture(scope="module")
def heads(tiny_bundles):
    loaded = {name: distilrt.load(tiny_bundles[name].path) for name in (QA_NAME, MLM_NAME)}
    yield loaded
    for head in loaded.values():
        head.close()


def test_a_batch_is_answered_per_request_as_each_alone(heads):
    head = heads[QA_NAME]
    requests = [Request(("Who wrote it?", "Ada Lovelace wrote it in 1843."), ()),
                Request(("When?", "Ada Lovelace wrote it in 1843. " * 40), (("top_k", 2),)),
                UserInputError("input 'question' is empty"),
                Request(("Where?", "It was written in London."), ()),
                Request(("Who? " * 40, "x " * 100), (("top_k", 2), )),  # no room for the context: the head refuses
                Request(("Why?", "Because."), (("max_seq_len", 100000),))]
    answers = answer_batch(head, "question-answering", requests)
    assert answers[0] == head(question="Who wrote it?", context="Ada Lovelace wrote it in 1843.")
    assert answers[1] == head(question="When?", context="Ada Lovelace wrote it in 1843. " * 40, top_k=2)
    assert answers[2] is requests[2]
    assert answers[3] == head(question="Where?", context="It was written in London.")
    assert isinstance(answers[5], UserInputError) and "max_seq_len" in str(answers[5])


def test_a_fill_mask_text_without_the_mask_fails_alone(heads):
    head = heads[MLM_NAME]
    mask = head.tokenizer_settings.mask_token
    texts = [f"The {mask} is red.", "No mask here.", f"A {mask} and a {mask}."]
    answers = answer_batch(head, "fill-mask", [Request((t,), ()) for t in texts])
    assert answers[0] == head(texts[0]) and answers[2] == head(texts[2])
    assert isinstance(answers[1], UserInputError) and "no mask token" in str(answers[1])


def test_a_backend_failure_reaches_every_request_of_its_call():
    class FailingHead:
        def __call__(self, *args, **kwargs):
            raise BackendError("onnxruntime failed")

    answers = answer_batch(FailingHead(), "fill-mask", [Request(("a",), ()), Request(("b",), ())])
    assert [str(a) for a in answers] == ["onnxruntime failed"] * 2


def test_int8_dynamic_bundles_are_flagged_as_batch_dependent(tiny_bundles):
    from distilrt.bundle import Bundle
    from distilrt.manifest import Manifest
    from distilrt.serve.server import batch_dependent

    fp32 = tiny_bundles[QA_NAME]
    assert not batch_dependent(fp32)
    data = fp32.manifest.to_dict()
    data["stages"] = {**data["stages"], "precision": {"variant": "int8-dynamic"}}
    assert batch_dependent(Bundle(fp32.path, Manifest(data)))
    data["stages"]["precision"] = {"variant": "int8-qdq"}  # calibrated, fixed scales: nothing shared across the batch
    assert not batch_dependent(Bundle(fp32.path, Manifest(data)))
