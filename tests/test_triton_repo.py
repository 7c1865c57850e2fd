"""`distilrt triton-repo`: repositories for the official tritonserver container.

Every config.pbtxt is parsed with Triton's own schema (tritonclient's model_config_pb2). The Python-backend
form is served by a real tritonserver (pytriton's) from the written repository and must answer as in-process.
The BLS form's onnxruntime_onnx / tensorrt_plan models cannot run on that binary (it has only the Python
backend), so their configs are checked field by field against the bundle.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the schema is tritonclient's model_config_pb2 (distilrt[serve])")

from conftest import MLM_NAME, QA_NAME, onnx_bundle_manifest  # noqa: E402

import distilrt  # noqa: E402
from distilrt.bundle import Bundle  # noqa: E402
from distilrt.cli import main  # noqa: E402
from distilrt.errors import UserInputError  # noqa: E402
from distilrt.manifest import Manifest  # noqa: E402
from distilrt.serve.repository import (  # noqa: E402
    ServingConfig,
    model_config,
    named_bundles,
    to_pbtxt,
    validate_pbtxt,
    write_repository,
)

KIND = {1: "KIND_GPU", 2: "KIND_CPU"}  # model_config_pb2.ModelInstanceGroup.Kind values


def _parsed(path: Path):
    return validate_pbtxt(path.read_text(encoding="utf-8"), str(path))


def test_bls_form_configs_follow_the_schema_and_the_bundle(tiny_bundles, tmp_path):
    bundles = [tiny_bundles[QA_NAME], tiny_bundles[MLM_NAME]]
    config = ServingConfig(max_batch_size=16, max_queue_delay_us=500, instances=2)
    written = write_repository(named_bundles(bundles, ["qa", "mlm"]), tmp_path / "repo", config, form="bls")
    assert sorted(p.relative_to(tmp_path / "repo").as_posix() for p in written) == [
        "mlm/config.pbtxt", "mlm_model/config.pbtxt", "qa/config.pbtxt", "qa_model/config.pbtxt"]
    for name, bundle in (("qa", bundles[0]), ("mlm", bundles[1])):
        inner = _parsed(tmp_path / "repo" / f"{name}_model" / "config.pbtxt")
        assert inner.name == f"{name}_model" and inner.platform == "onnxruntime_onnx"
        assert inner.max_batch_size == bundle.manifest.shape_profile["max_batch"]
        assert [i.name for i in inner.input] == list(bundle.input_names)
        assert all(list(i.dims) == [-1] for i in inner.input)
        assert [o.name for o in inner.output] == list(bundle.output_names)
        expected_dims = [[-1, bundle.manifest.vocab_size]] if bundle.task == "fill-mask" else [[-1], [-1]]
        assert [list(o.dims) for o in inner.output] == expected_dims
        assert inner.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(KIND[g.kind], g.count) for g in inner.instance_group] == [("KIND_CPU", 2)]
        assert (tmp_path / "repo" / f"{name}_model" / "1" / "model.onnx").read_bytes() == bundle.model_path.read_bytes()

        outer = _parsed(tmp_path / "repo" / name / "config.pbtxt")
        assert outer.backend == "python" and outer.max_batch_size == 16
        assert {k: v.string_value for k, v in outer.parameters.items()} == {
            "form": "bls", "bundle": "bundle", "max_text_bytes": "65536", "model": f"{name}_model",
            "model_max_batch_size": str(inner.max_batch_size)}
        assert outer.output[0].name == "answers"
        version = tmp_path / "repo" / name / "1"
        assert sorted(p.name for p in (version / "bundle").iterdir()) == ["manifest.json", "tokenizer.json"]
        assert (version / "model.py").is_file()


def test_an_engine_bundle_maps_to_tensorrt_plan_on_the_gpu():
    data = onnx_bundle_manifest("fp16-engine", ("input_ids", "attention_mask"), model_format="tensorrt-plan")
    data["model"]["outputs"] = [{"name": n, "dtype": "float32", "shape": ["batch", "sequence"]}
                                for n in ("start_logits", "end_logits")]
    bundle = Bundle(Path("unused"), Manifest(data))
    config = model_config("qa_model", bundle, ServingConfig(dynamic_batching=False))
    parsed = validate_pbtxt(to_pbtxt(config))
    assert parsed.platform == "tensorrt_plan" and parsed.max_batch_size == data["shape_profile"]["max_batch"]
    assert [(KIND[g.kind], g.count) for g in parsed.instance_group] == [("KIND_GPU", 1)]
    assert not parsed.HasField("dynamic_batching")
    from tritonclient.grpc import model_config_pb2

    assert [i.data_type for i in parsed.input] == [model_config_pb2.TYPE_INT64] * 2


@pytest.mark.parametrize("bad, message", [
    ('name: "x"\nbackend: "python"\nmax_batch_sise: 4\n', "max_batch_sise"),
    ('name: "x"\ninstance_group [ { kind: KIND_TPU } ]\n', "KIND_TPU"),
    ('name: "x"\ninput [ { name: "a" data_type: TYPE_STRING dims: [ "one" ] } ]\n', "dims"),
])
def test_the_schema_check_refuses_what_triton_would(bad, message):
    with pytest.raises(UserInputError, match=message):
        validate_pbtxt(bad)


def test_the_written_repository_replaces_the_old_one_whole(tiny_bundles, tmp_path):
    (tmp_path / "repo" / "stale").mkdir(parents=True)
    write_repository(named_bundles([tiny_bundles[QA_NAME]], ["qa"]), tmp_path / "repo", ServingConfig(), form="python")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["README.md", "qa"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging directory was left behind"


def test_two_bundles_cannot_share_a_model_name(tiny_bundles):
    with pytest.raises(UserInputError, match="would both be model 'x'"):
        named_bundles([tiny_bundles[QA_NAME], tiny_bundles[MLM_NAME]], ["x", "x"])


@pytest.mark.slow
def test_the_python_form_is_served_by_a_real_tritonserver(tiny_bundles, tmp_path, capsys):
    """`distilrt triton-repo --form python` output, standalone (the bundles copied in), on tritonserver."""
    pytest.importorskip("pytriton", reason="the real tritonserver is nvidia-pytriton's (distilrt[serve])")
    from distilrt.serve.client import Client
    from distilrt.serve.server import Ports, TritonProcess

    qa, mlm = tiny_bundles[QA_NAME], tiny_bundles[MLM_NAME]
    assert main(["triton-repo", f"qa={qa.path}", f"mlm={mlm.path}", "--out", str(tmp_path / "repo"), "--form",
                 "python", "--max-batch-size", "8"]) == 0
    assert "checked against Triton's model configuration schema" in capsys.readouterr().out
    assert (tmp_path / "repo" / "qa" / "1" / "bundle" / "model.onnx").is_file()
    advice = (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")  # tritonserver ignores it (served below)
    assert "--http-restricted-api=shared-memory,logging,trace,model-repository,model-config:" in advice
    assert "--grpc-restricted-protocol=" in advice and "--http-address=127.0.0.1" in advice
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with TritonProcess(tmp_path / "repo", Ports(*ports), log=tmp_path / "triton.log", exit_timeout_s=5) as server:
        server.start().wait_ready(120)
        with Client(server.url, timeout_s=30) as client, distilrt.load(qa.path) as qa_head, \
                distilrt.load(mlm.path) as mlm_head:
            question, context = "Who wrote it?", "The essay was written by Ada Lovelace in 1843 in London."
            assert client.question_answering("qa", question, context, top_k=3) == qa_head(question=question,
                                                                                          context=context, top_k=3)
            text = f"Paris is the {mlm_head.tokenizer_settings.mask_token} of France."
            assert client.fill_mask("mlm", text) == mlm_head(text)


# Stands in for Triton's onnxruntime backend, which pytriton's tritonserver lacks: the same config (inputs,
# outputs, max_batch_size) on the Python backend, running the repository's model.onnx with ONNX Runtime.
ONNX_STAND_IN = '''
import json
from pathlib import Path

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            outputs = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, o) for n, o in zip(self.outputs, outputs)]))
        return responses
'''


@pytest.mark.slow
def test_the_bls_form_answers_through_its_model(tiny_bundles, tmp_path):
    """The bls form's text model (distilrt's head, BLS requests) on a real tritonserver, with its `_model`
    served by a Python stand-in for the onnxruntime backend: answers equal the in-process ones, long contexts
    (several windows per BLS request) included."""
    pytest.importorskip("pytriton", reason="the real tritonserver is nvidia-pytriton's (distilrt[serve])")
    from distilrt.serve.client import Client
    from distilrt.serve.server import Ports, TritonProcess

    qa, mlm = tiny_bundles[QA_NAME], tiny_bundles[MLM_NAME]
    repo = tmp_path / "repo"
    write_repository(named_bundles([qa, mlm], ["qa", "mlm"]), repo, ServingConfig(max_batch_size=4), form="bls")
    for name in ("qa_model", "mlm_model"):
        config = repo / name / "config.pbtxt"
        text = config.read_text(encoding="utf-8")
        assert 'platform: "onnxruntime_onnx"' in text
        config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'), encoding="utf-8")
        (repo / name / "1" / "model.py").write_text(ONNX_STAND_IN, encoding="utf-8")
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with TritonProcess(repo, Ports(*ports), log=tmp_path / "triton.log", exit_timeout_s=5) as server:
        server.start().wait_ready(120)
        with Client(server.url, timeout_s=30) as client, distilrt.load(qa.path) as qa_head, \
                distilrt.load(mlm.path) as mlm_head:
            context = "The essay was written by Ada Lovelace in 1843 in London. " * 60  # several windows
            for question, text in (("Who wrote it?", context[:200]), ("Where was it written?", context)):
                assert client.question_answering("qa", question, text, top_k=2) == qa_head(
                    question=question, context=text, top_k=2)
            masked = f"Paris is the {mlm_head.tokenizer_settings.mask_token} of France."
            assert client.fill_mask("mlm", masked, top_k=3) == mlm_head(masked, top_k=3)
            with pytest.raises(Exception, match="no mask token"):
                client.fill_mask("mlm", "no mask here")


def test_serves_own_repository_links_the_bundle_instead_of_naming_its_path(tiny_bundles, tmp_path):
    """`distilrt serve` references bundles where they are: through a link, so the model config (which a client
    with the admin key can read) holds no absolute path."""
    bundle = tiny_bundles[QA_NAME]
    [config] = write_repository(named_bundles([bundle], ["qa"]), tmp_path / "repo", ServingConfig(), form="python",
                                copy_bundles=False)
    text = config.read_text(encoding="utf-8")
    assert 'string_value: "bundle"' in text and str(bundle.path.resolve()) not in text and str(bundle.path) not in text
    link = tmp_path / "repo" / "qa" / "1" / "bundle"
    assert link.is_symlink() and link.resolve() == bundle.path.resolve()
    assert not (tmp_path / "repo" / "README.md").exists()  # serve's temporary repository needs no advice
