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


def test_only_bundles_not_verified_batch_invariant_are_flagged(tiny_bundles):
    """serve warns for a bundle whose build found it batch dependent (--allow-batch-variant), and for bundles built
    before the check when they are per-tensor int8-dynamic; a verified bundle batches without a warning."""
    from distilrt.bundle import Bundle
    from distilrt.manifest import Manifest
    from distilrt.serve.server import batch_dependent

    fp32 = tiny_bundles[QA_NAME]
    data = fp32.manifest.to_dict()

    def flagged(**stages) -> bool:
        data["stages"] = {**fp32.manifest.to_dict()["stages"], **stages}
        data["stages"] = {k: v for k, v in data["stages"].items() if v is not None}
        return batch_dependent(Bundle(fp32.path, Manifest(data)))

    assert not flagged(invariance=None)  # fp32 built before the check: fixed graph, nothing shared
    assert flagged(invariance=None, precision={"variant": "int8-dynamic"})  # old: per-tensor scales
    assert not flagged(invariance=None, precision={"variant": "int8-dynamic", "activation_scales": "token"})
    assert not flagged(invariance=None, precision={"variant": "int8-qdq"})  # calibrated, fixed scales
    assert flagged(invariance={"passed": False}, precision={"variant": "int8-dynamic", "activation_scales": "tensor"})
    assert not flagged(invariance={"passed": True}, precision={"variant": "int8-dynamic", "activation_scales": "token"})


def test_read_batch_gives_one_request_per_example():
    from distilrt.serve.protocol import read_batch

    arrays = {"question": np.array([[b"Who?"], [b"When?"]], dtype=np.object_),
              "context": np.array([[b"Ada."], [b"In 1843."]], dtype=np.object_),
              "top_k": np.array([[1], [2]], dtype=np.int32)}
    requests = read_batch("question-answering", arrays.get, 100)
    assert [r.texts for r in requests] == [("Who?", "Ada."), ("When?", "In 1843.")]
    assert [r.option_dict() for r in requests] == [{"top_k": 1}, {"top_k": 2}]
    fill = read_batch("fill-mask", {"text": np.array([[b"a [MASK]"], [b"b [MASK]"]], dtype=np.object_),
                                    "targets": np.array([[b"x", b"y"], [b"z", b"w"]], dtype=np.object_)}.get, 100)
    assert [r.option_dict() for r in fill] == [{"targets": ["x", "y"]}, {"targets": ["z", "w"]}]


@pytest.mark.parametrize("arrays, message", [
    ({"question": [[b"Who?"], [b""]], "context": [[b"Ada."], [b"Ada."]]}, "example 1 of 2: input 'question' is empty"),
    ({"question": [[b"Who?"], [b"Why?"]], "context": [[b"Ada."]]}, "batch sizes differ"),
    ({"question": np.zeros((0, 1), dtype=np.object_), "context": np.zeros((0, 1), dtype=np.object_)}, "no example"),
])
def test_read_batch_refuses_a_bad_example_naming_it(arrays, message):
    from distilrt.serve.protocol import read_batch

    arrays = {name: np.asarray(value, dtype=np.object_) for name, value in arrays.items()}
    with pytest.raises(UserInputError, match=message):
        read_batch("question-answering", arrays.get, 100)


@pytest.mark.parametrize("name, value, ok", [("top_k", 0, False), ("top_k", -1, False), ("top_k", 1, True),
                                             ("max_seq_len", 65536, True), ("max_seq_len", 65537, False),
                                             ("max_answer_len", 2**31 - 1, False), ("doc_stride", 0, True),
                                             ("doc_stride", -1, False)])
def test_integer_options_are_bounded_per_request(name, value, ok):
    get = _get({"question": b"Who?", "context": b"Ada.", name: np.int32(value)})
    if ok:
        assert read_request("question-answering", get, 100).option_dict() == {name: value}
    else:
        with pytest.raises(UserInputError, match=f"{name} must be an integer from [01] to 65536, got {value}"):
            read_request("question-answering", get, 100)


class FakeTritonError:
    """triton_python_backend_utils.TritonError's constructor and codes (the stub's C++ class)."""

    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code="UNKNOWN"):
        self.message, self.code = message, code


def test_client_mistakes_are_invalid_arg_and_faults_internal():
    from types import SimpleNamespace

    from distilrt.errors import ServerError, UnsupportedError
    from distilrt.serve.python_model import triton_error

    pb_utils = SimpleNamespace(TritonError=FakeTritonError)
    assert triton_error(pb_utils, "m", UserInputError("x")).code == "INVALID_ARG"
    assert triton_error(pb_utils, "m", UnsupportedError("x")).code == "INVALID_ARG"
    assert triton_error(pb_utils, "m", BackendError("x")).code == "INTERNAL"
    assert triton_error(pb_utils, "m", ServerError("x")).code == "INTERNAL"


def test_access_binds_loopback_and_restricts_by_default():
    from distilrt.serve.access import ADMIN_HEADER, Access

    access = Access()
    args = access.arguments()
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(args)
    group = f"shared-memory,logging,trace,model-repository,model-config:{ADMIN_HEADER}={access.admin_key}"
    assert f"--http-restricted-api={group}" in args and f"--grpc-restricted-protocol={group}" in args
    assert len(access.admin_key) >= 16 and Access().admin_key != access.admin_key  # a new secret each start
    assert access.admin_key not in repr(access)
    opened = Access(open_apis=("logging", "trace")).arguments()
    assert any(a.startswith("--http-restricted-api=shared-memory,model-repository,model-config:") for a in opened)
    every = Access(open_apis=("shared-memory", "logging", "trace", "model-repository", "model-config")).arguments()
    assert not [a for a in every if "restricted" in a]


@pytest.mark.parametrize("settings, message", [
    ({"host": "localhost"}, "not an IP address"), ({"host": "::1"}, "IPv4"),
    ({"admin_key": "short"}, "at least 16"), ({"admin_key": "a,b:c=d-0123456789"}, "letters, digits"),
    ({"open_apis": ("inference",)}, "can be opened are"),
])
def test_access_refuses_bad_settings(settings, message):
    from distilrt.serve.access import Access

    with pytest.raises(UserInputError, match=message):
        Access(**settings)
