"""`distilrt serve` on the five tiny stand-ins: a real tritonserver (pytriton's), real clients over HTTP and gRPC.

Answers must equal the in-process head's (`distilrt.load`) for the same input, under 32 concurrent clients too;
bad requests get their own clear error and the server keeps answering; a killed server gives clients errors
within their timeouts, not hangs; SIGTERM shuts `distilrt serve` down cleanly. One server per module.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton (pip install distilrt[serve])")
pytest.importorskip("tritonclient.http", reason="the serving tests need tritonclient (pip install distilrt[serve])")

from conftest import MLM_CHECKPOINTS, QA_CHECKPOINTS, small_variant_options  # noqa: E402

import distilrt  # noqa: E402
from distilrt.calib import SQUAD_DEV, WIKITEXT_VALID  # noqa: E402
from distilrt.calib.squad import long_context_questions, read_squad, sample_questions  # noqa: E402
from distilrt.calib.text import mask_words, read_sentences  # noqa: E402
from distilrt.errors import ServerError  # noqa: E402
from distilrt.serve.client import Client  # noqa: E402
from distilrt.serve.repository import ServingConfig, named_bundles, write_repository  # noqa: E402
from distilrt.serve.server import Ports, TritonProcess  # noqa: E402

pytestmark = pytest.mark.slow  # starts tritonserver (seconds per model)
TIMEOUT_S = 60.0  # every client call is bounded by this
CLIENTS, REQUESTS_PER_CLIENT = 32, 50


def free_ports(count: int = 3) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def served(tiny_bundles, tmp_path_factory):
    """The five tiny bundles, each a model named after its checkpoint, on one tritonserver."""
    tmp = tmp_path_factory.mktemp("serve")
    models = named_bundles([tiny_bundles[name] for name in QA_CHECKPOINTS + MLM_CHECKPOINTS],
                           list(QA_CHECKPOINTS + MLM_CHECKPOINTS))
    # A queue delay so that concurrent requests really meet in batches.
    write_repository(models, tmp / "repo", ServingConfig(max_queue_delay_us=2000, threads=1), form="python",
                     copy_bundles=False)
    server = TritonProcess(tmp / "repo", Ports(*free_ports()), log=tmp / "triton.log", exit_timeout_s=5)
    server.start()
    try:
        server.wait_ready(180)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def heads(tiny_bundles):
    """The in-process reference: distilrt.load of each bundle."""
    loaded = {name: distilrt.load(bundle.path) for name, bundle in tiny_bundles.items()}
    yield loaded
    for head in loaded.values():
        head.close()


def qa_examples(count: int, seed: int) -> list[dict]:
    """SQuAD dev questions of mixed lengths: single-window contexts and multi-window ones, some with options."""
    questions = read_squad(SQUAD_DEV)
    short = sample_questions(questions, count - count // 4, seed)
    long = long_context_questions(questions, count // 4, seed)
    examples = [{"question": q.question, "context": q.context} for q in short + long]
    rng = random.Random(seed)
    for example in examples:
        if rng.random() < 0.25:
            example["top_k"] = rng.choice([2, 3])
    rng.shuffle(examples)
    return examples


def mlm_examples(mask_token: str, count: int, seed: int) -> list[str]:
    return mask_words(read_sentences(WIKITEXT_VALID), mask_token, count, seed)


def client(server, protocol: str = "http") -> Client:
    return Client(server.url if protocol == "http" else server.grpc_url, protocol=protocol, timeout_s=TIMEOUT_S)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_bundle_answers_as_in_process(served, heads, protocol):
    with client(served, protocol) as c:
        for name in QA_CHECKPOINTS:
            for example in qa_examples(8, seed=1):
                options = {k: v for k, v in example.items() if k not in ("question", "context")}
                expected = heads[name](question=example["question"], context=example["context"], **options)
                assert c.question_answering(name, **example) == expected, (name, example)
        for name in MLM_CHECKPOINTS:
            mask = heads[name].tokenizer_settings.mask_token
            for text in mlm_examples(mask, 6, seed=2):
                assert c.fill_mask(name, text) == heads[name](text), (name, text)
            text = mlm_examples(mask, 1, seed=3)[0]
            assert c.fill_mask(name, text, top_k=2) == heads[name](text, top_k=2)
            assert c.fill_mask(name, text, targets=["the", "a"]) == heads[name](text, targets=["the", "a"])


def test_32_concurrent_clients_get_exactly_the_in_process_answers(served, heads):
    """32 clients x 50 requests of mixed QA lengths (and one fill-mask model): each answer is the in-process
    answer to that very request; none lost, none duplicated; the dynamic batcher really batched them."""
    qa_name, mlm_name = QA_CHECKPOINTS[0], MLM_CHECKPOINTS[1]
    examples = qa_examples(120, seed=5)
    texts = mlm_examples(heads[mlm_name].tokenizer_settings.mask_token, 40, seed=6)
    expected_qa = [heads[qa_name](question=e["question"], context=e["context"],
                                  **{k: v for k, v in e.items() if k == "top_k"}) for e in examples]
    expected_mlm = [heads[mlm_name](text) for text in texts]
    before = _batch_stats(served, qa_name)

    def one_client(index: int) -> list[tuple[int, int, bool]]:
        rng = random.Random(index)
        done = []
        with client(served, "grpc" if index % 2 else "http") as c:
            for request in range(REQUESTS_PER_CLIENT):
                if rng.random() < 0.8:
                    k = rng.randrange(len(examples))
                    same = c.question_answering(qa_name, **examples[k]) == expected_qa[k]
                else:
                    k = rng.randrange(len(texts))
                    same = c.fill_mask(mlm_name, texts[k]) == expected_mlm[k]
                done.append((index, request, same))
        return done

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [item for done in pool.map(one_client, range(CLIENTS)) for item in done]
    counts = Counter((index, request) for index, request, _ in results)
    assert len(counts) == CLIENTS * REQUESTS_PER_CLIENT and set(counts.values()) == {1}
    assert all(same for _, _, same in results), sum(not same for _, _, same in results)
    executions, inferences = (after - b for after, b in zip(_batch_stats(served, qa_name), before))
    assert inferences > executions, "the dynamic batcher never put two requests in one execution"


@pytest.fixture(scope="module")
def served_int8(tiny_checkpoints, tmp_path_factory):
    """int8-dynamic (per-token, the default) of one QA and one fill-mask stand-in, built and gated here, on one
    tritonserver with dynamic batching on; and their in-process heads."""
    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.variants import build_variants

    tmp = tmp_path_factory.mktemp("serve-int8")
    names = (QA_CHECKPOINTS[1], MLM_CHECKPOINTS[1])
    bundles = []
    for name in names:
        fp32 = build_fp32(str(tiny_checkpoints[name]), BuildOptions(out_dir=tmp / "artifacts"),
                          progress=lambda message: None)
        [outcome] = build_variants(fp32, ("int8-dynamic",), small_variant_options(), progress=lambda message: None)
        assert outcome.published, outcome.reason
        bundles.append(distilrt.read_bundle(outcome.bundle))
        assert bundles[-1].manifest.batch_invariant is True
    write_repository(named_bundles(bundles, list(names)), tmp / "repo",
                     ServingConfig(max_queue_delay_us=2000, threads=1), form="python", copy_bundles=False)
    server = TritonProcess(tmp / "repo", Ports(*free_ports()), log=tmp / "triton.log", exit_timeout_s=5)
    loaded = {name: distilrt.load(bundle.path) for name, bundle in zip(names, bundles)}
    server.start()
    try:
        server.wait_ready(180)
        yield server, loaded
    finally:
        server.close()
        for head in loaded.values():
            head.close()


def test_int8_dynamic_served_with_dynamic_batching_answers_as_each_request_alone(served_int8):
    """32 clients, mixed QA lengths and fill-mask, through Triton's dynamic batcher: every int8-dynamic answer,
    scores included, equals the in-process answer to that request alone (per-token scales:
    docs/design.md#batch-invariance)."""
    server, heads = served_int8
    qa_name, mlm_name = QA_CHECKPOINTS[1], MLM_CHECKPOINTS[1]
    examples = qa_examples(60, seed=7)
    texts = mlm_examples(heads[mlm_name].tokenizer_settings.mask_token, 30, seed=8)
    expected_qa = [heads[qa_name](question=e["question"], context=e["context"],
                                  **{k: v for k, v in e.items() if k == "top_k"}) for e in examples]
    expected_mlm = [heads[mlm_name](text) for text in texts]
    before = _batch_stats(server, qa_name)

    def one_client(index: int) -> list[bool]:
        rng = random.Random(100 + index)
        same = []
        with client(server, "grpc" if index % 2 else "http") as c:
            for _ in range(12):
                if rng.random() < 0.7:
                    k = rng.randrange(len(examples))
                    same.append(c.question_answering(qa_name, **examples[k]) == expected_qa[k])
                else:
                    k = rng.randrange(len(texts))
                    same.append(c.fill_mask(mlm_name, texts[k]) == expected_mlm[k])
        return same

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [same for done in pool.map(one_client, range(CLIENTS)) for same in done]
    assert len(results) == CLIENTS * 12 and all(results), f"{results.count(False)} answers differ from alone"
    executions, inferences = (after - b for after, b in zip(_batch_stats(server, qa_name), before))
    assert inferences > executions, "the dynamic batcher never put two requests in one execution"


def _batch_stats(server, model: str) -> tuple[int, int]:
    """(executions, inferences) of a model from Triton's statistics: fewer executions means batching."""
    with urllib.request.urlopen(f"http://{server.url}/v2/models/{model}/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"][0]
    return int(stats["execution_count"]), int(stats["inference_count"])


def _post(server, model: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{server.url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _bytes_input(name: str, value: str) -> dict:
    return {"name": name, "datatype": "BYTES", "shape": [1, 1], "data": [value]}


MALFORMED = {
    "missing input": ("qa", [_bytes_input("question", "Who?")], "context"),
    "wrong dtype": ("qa", [{"name": "question", "datatype": "INT32", "shape": [1, 1], "data": [7]},
                           _bytes_input("context", "Ada wrote it.")], "expects 'BYTES'"),
    "empty question": ("qa", [_bytes_input("question", ""), _bytes_input("context", "Ada wrote it.")],
                       "input 'question' is empty"),
    "empty context": ("qa", [_bytes_input("question", "Who?"), _bytes_input("context", "")], "input 'context' is empty"),
    "1 MB context": ("qa", [_bytes_input("question", "Who?"), _bytes_input("context", "Ada wrote it. " * 75000)],
                     "more than this server's limit"),
    "no mask token": ("mlm", [_bytes_input("text", "There is no mask in this text.")], "no mask token"),
    "max_seq_len above the model": ("qa", [_bytes_input("question", "Who?"), _bytes_input("context", "Ada wrote it."),
                                           {"name": "max_seq_len", "datatype": "INT32", "shape": [1, 1],
                                            "data": [4096]}], "pass max_seq_len <="),
    "top_k of 0": ("mlm", [_bytes_input("text", "Paris is the {mask} of France."),
                           {"name": "top_k", "datatype": "INT32", "shape": [1, 1], "data": [0]}], "top_k must be"),
    "unknown model": ("no-such-model", [_bytes_input("text", "x")], "unknown model"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_request_gets_a_clear_error_and_the_server_keeps_answering(served, heads, case):
    qa_name, mlm_name = QA_CHECKPOINTS[0], MLM_CHECKPOINTS[0]
    model, inputs, message = MALFORMED[case]
    model = {"qa": qa_name, "mlm": mlm_name}.get(model, model)
    mask = heads[mlm_name].tokenizer_settings.mask_token
    for item in inputs:
        if item["datatype"] == "BYTES":
            item["data"] = [value.replace("{mask}", mask) for value in item["data"]]
    status, body = _post(served, model, {"inputs": inputs})
    # The client's mistake, never a 5xx: 400, or Triton's own 404 for a model it does not have.
    assert status == (404 if case == "unknown model" else 400) and message in body["error"], (status, body)
    with client(served) as c:
        assert c.question_answering(qa_name, "Who wrote it?", "Ada wrote it.") == heads[qa_name]("Who wrote it?",
                                                                                                   "Ada wrote it.")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_invalid_utf8_and_lone_surrogates_are_refused_per_request(served, protocol):
    with client(served, protocol) as c:
        with pytest.raises(ServerError, match=r"input 'question' is not valid UTF-8 \(byte 0xff at offset 3\)"):
            c.question_answering(QA_CHECKPOINTS[0], b"Who\xff?", "Ada wrote it.")
        # A lone surrogate encoded the only way it can be (CESU-style bytes) is invalid UTF-8 too.
        with pytest.raises(ServerError, match="not valid UTF-8"):
            c.fill_mask(MLM_CHECKPOINTS[0], "a [MASK] \ud800".encode("utf-8", "surrogatepass"))


def test_a_bad_request_in_a_batch_does_not_fail_the_others(served, heads):
    """Good and bad requests sent together (one batch, with the queue delay): each gets its own outcome."""
    name = MLM_CHECKPOINTS[0]
    mask = heads[name].tokenizer_settings.mask_token
    texts = [f"The {mask} sat on the mat.", "No mask here at all.", f"A {mask} is a fruit.", f"Paris {mask} France."]

    def send(text):
        with client(served) as c:
            try:
                return c.fill_mask(name, text)
            except ServerError as e:
                return e

    before = _batch_stats(served, name)
    with ThreadPoolExecutor(len(texts) * 4) as pool:
        outcomes = list(pool.map(send, texts * 4))
    executions, inferences = (after - b for after, b in zip(_batch_stats(served, name), before))
    assert inferences == len(outcomes) and executions < inferences, "the requests never met in a batch"
    for text, outcome in zip(texts * 4, outcomes):
        if mask in text:
            assert outcome == heads[name](text)
        else:
            assert isinstance(outcome, ServerError) and "no mask token" in str(outcome)


def test_health_metadata_and_metrics_are_tritons(served):
    with urllib.request.urlopen(f"http://{served.url}/v2/health/live", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://{served.url}/v2/models/{QA_CHECKPOINTS[0]}", timeout=10) as response:
        metadata = json.load(response)
    assert [i["name"] for i in metadata["inputs"]][:2] == ["question", "context"]
    assert metadata["outputs"] == [{"name": "answers", "datatype": "BYTES", "shape": [-1, 1]}]
    with urllib.request.urlopen(f"http://127.0.0.1:{served.ports.metrics}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'nv_inference_request_success{{model="{QA_CHECKPOINTS[0]}",version="1"}}' in metrics


def test_clients_of_a_killed_server_get_errors_not_hangs(tiny_bundles, tmp_path):
    name = QA_CHECKPOINTS[0]
    write_repository([(name, tiny_bundles[name])], tmp_path / "repo", ServingConfig(threads=1), form="python",
                     copy_bundles=False)
    server = TritonProcess(tmp_path / "repo", Ports(*free_ports()), log=tmp_path / "triton.log", exit_timeout_s=1)
    server.start()
    try:
        server.wait_ready(120)
        examples = qa_examples(16, seed=9)
        stop = threading.Event()

        def load(index: int) -> tuple[int, list[str]]:
            answered, errors = 0, []
            with Client(server.grpc_url if index % 2 else server.url, protocol="grpc" if index % 2 else "http",
                        timeout_s=10) as c:
                while not stop.is_set() and len(errors) < 3:
                    try:
                        c.question_answering(name, **examples[answered % len(examples)])
                        answered += 1
                    except ServerError as e:
                        errors.append(str(e))
            return answered, errors

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(load, i) for i in range(8)]
            time.sleep(2)
            server.kill()  # SIGKILL mid-load: no graceful shutdown
            started = time.monotonic()
            outcomes = [future.result(timeout=60) for future in futures]
            stop.set()
        assert time.monotonic() - started < 40, "clients hung after the server died"
        assert sum(answered for answered, _ in outcomes) > 0, "no request was answered before the kill"
        assert all(errors for _, errors in outcomes), "a client saw no error after the server was killed"
    finally:
        server.close()
    assert not _processes_using(tmp_path / "repo"), "a Python backend stub outlived its killed server"


def _processes_using(repo: Path) -> list[int]:
    """Processes whose command line names the repository (the backend stubs name their model.py)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(repo) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigterm_stops_distilrt_serve_gracefully(tiny_bundles, tmp_path):
    http, grpc, metrics = free_ports()
    bundle = tiny_bundles[MLM_CHECKPOINTS[2]].path
    process = subprocess.Popen([sys.executable, "-m", "distilrt.cli", "serve", f"mlm={bundle}", "--http-port",
                                str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1",
                                "--exit-timeout", "5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []  # read as they come: SIGTERM goes only after `distilrt serve` itself says it is ready

    def read_output():
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("1 model(s) ready: mlm" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        with Client(f"127.0.0.1:{http}", timeout_s=10) as c:
            assert c.ready("mlm")
            assert c.fill_mask("mlm", "Paris is the [MASK] of France.", top_k=1)[0]["token_str"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=10)
        output = "".join(lines)
        assert process.returncode == 0, output
        log = Path(output.split("Triton's log: ")[1].split(" (pid")[0])  # Triton's own log is a file, not the console
        assert "successfully unloaded 'mlm'" in log.read_text(), output
        log.unlink()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(ConnectionError):  # and nothing is left listening
        socket.create_connection(("127.0.0.1", http), timeout=2).close()


def test_serve_refuses_a_python_without_a_shared_libpython(monkeypatch):
    import sysconfig

    from distilrt.errors import CapabilityError
    from distilrt.serve import environment

    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 0 if name == "Py_ENABLE_SHARED" else real(name))
    with pytest.raises(CapabilityError, match="no shared libpython.*_recursion_count.*--enable-shared"):
        environment.server_environment(environment.find_triton(), {})


def test_the_server_gets_this_pythons_own_libpython_first():
    import sysconfig

    from distilrt.serve import environment

    install = environment.find_triton()
    env = environment.server_environment(install, {"LD_LIBRARY_PATH": "/elsewhere", "PATH": "/usr/bin"})
    first, second, *rest = env["LD_LIBRARY_PATH"].split(":")
    library = environment.python_library()
    assert Path(first) == library.parent and library.name.startswith(f"libpython{sys.version_info.major}.")
    assert Path(first) in (Path(sysconfig.get_config_var("LIBDIR")),
                           Path(sysconfig.get_config_var("LIBDIR")) / (sysconfig.get_config_var("MULTIARCH") or ""))
    assert Path(second) == install.libs and rest == ["/elsewhere"]
    assert env["PATH"].split(":")[0] == str(Path(sys.exec_prefix) / "bin")


def test_numpy_str_arrays_and_bytes_decode_alike():
    from distilrt.serve.protocol import read_request

    arrays = {"text": np.array([["Paris is the [MASK] of France."]], dtype=np.object_),
              "top_k": np.array([[3]], dtype=np.int32)}
    request = read_request("fill-mask", arrays.get, 1000)
    assert request.texts == ("Paris is the [MASK] of France.",) and request.option_dict() == {"top_k": 3}
