"""`distilrt serve` is safe by default and honest about its health (issue 20, items 4-6), on a real tritonserver.

It listens on 127.0.0.1; the APIs a text client never needs (system shared memory above all: registering the
backend stub's own region crashed tritonserver) answer 403 without the admin key, and work with it; a client's
mistakes are 400 / INVALID_ARGUMENT, a [N, 1] batch is answered example by example; and when a backend stub
dies, `distilrt serve` exits 1 within seconds and leaves no /dev/shm region behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton (pip install distilrt[serve])")
pytest.importorskip("tritonclient.grpc", reason="the serving tests need tritonclient (pip install distilrt[serve])")

from conftest import MLM_NAME, QA_NAME  # noqa: E402

import distilrt  # noqa: E402
from distilrt.serve.access import ADMIN_HEADER, GRPC_ADMIN_HEADER, RESTRICTED_APIS  # noqa: E402
from distilrt.serve.stubs import SHM_DIR, SHM_PREFIX, backend_stubs  # noqa: E402

pytestmark = pytest.mark.slow  # starts tritonserver
KEY = "test-admin-key-0123456789"
MAX_BATCH = 4
# One call of each restricted API over HTTP: (method, path, body).
RESTRICTED_CALLS = {
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
    "logging": ("GET", "/v2/logging", None),
    "trace": ("GET", "/v2/trace/setting", None),
    "model-repository": ("POST", "/v2/repository/index", {}),
    "model-config": ("GET", "/v2/models/qa/config", None),
}
assert set(RESTRICTED_CALLS) == set(RESTRICTED_APIS)


def free_ports(count: int = 3) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Serve:
    """`python -m distilrt.cli serve qa=... mlm=...` with its stderr collected as it comes."""

    def __init__(self, tiny_bundles, tmp: Path, *extra: str):
        self.http, self.grpc, self.metrics = free_ports()
        self.log = tmp / "triton.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distilrt.cli", "serve", f"qa={tiny_bundles[QA_NAME].path}",
             f"mlm={tiny_bundles[MLM_NAME].path}", "--http-port", str(self.http), "--grpc-port", str(self.grpc),
             "--metrics-port", str(self.metrics), "--threads", "1", "--exit-timeout", "5", "--max-batch-size",
             str(MAX_BATCH), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 180
        while not any("2 model(s) ready" in line for line in self.lines):
            assert self.process.poll() is None and time.monotonic() < deadline, self.output
            time.sleep(0.2)
        self.tritonserver = next(pid for pid in _children(self.process.pid))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def call(self, method: str, path: str, body=None, key: str | None = None) -> tuple[int, dict | bytes]:
        headers = {"Content-Type": "application/json", **({ADMIN_HEADER: key} if key else {})}
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method, headers=headers,
                                         data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return status, raw

    def infer(self, model: str, inputs: list[dict], **extra) -> tuple[int, dict]:
        return self.call("POST", f"/v2/models/{model}/infer", {"inputs": inputs, **extra})

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _text(name: str, values, shape=None) -> dict:
    values = values if isinstance(values, list) else [values]
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(values), 1], "data": values}


def _int(name: str, value: int) -> dict:
    return {"name": name, "datatype": "INT32", "shape": [1, 1], "data": [value]}


@pytest.fixture(scope="module")
def serve(tiny_bundles, tmp_path_factory):
    server = Serve(tiny_bundles, tmp_path_factory.mktemp("serve-safety"), "--admin-key", KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def heads(tiny_bundles):
    loaded = {name: distilrt.load(tiny_bundles[name].path) for name in (QA_NAME, MLM_NAME)}
    yield loaded
    for head in loaded.values():
        head.close()


def _listening(port: int) -> list[ipaddress._BaseAddress]:
    """The local addresses of sockets listening on ``port`` (/proc/net/tcp and tcp6, state 0A)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(raw))
    return found


def test_every_port_listens_on_loopback_only(serve):
    for port in (serve.http, serve.grpc, serve.metrics):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        for address in addresses:
            assert (getattr(address, "ipv4_mapped", None) or address).is_loopback, (port, addresses)
    assert f"HTTP 127.0.0.1:{serve.http}" in serve.output


@pytest.mark.parametrize("api", RESTRICTED_APIS)
def test_a_restricted_api_is_refused_without_the_key_and_works_with_it(serve, api):
    method, path, body = RESTRICTED_CALLS[api]
    status, answer = serve.call(method, path, body)
    assert status == 403 and ADMIN_HEADER in answer["error"], (status, answer)
    status, answer = serve.call(method, path, body, key="wrong-key-0123456789")
    assert status == 403, (status, answer)
    status, answer = serve.call(method, path, body, key=KEY)
    assert status == 200, (status, answer)


def test_restricted_protocols_over_grpc(serve):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc}") as client:
        for call in (client.get_log_settings, client.get_system_shared_memory_status, client.get_model_repository_index,
                     lambda **kw: client.get_model_config("qa", **kw)):
            with pytest.raises(InferenceServerException, match=GRPC_ADMIN_HEADER):
                call()
            with pytest.raises(InferenceServerException, match=GRPC_ADMIN_HEADER):
                call(headers={GRPC_ADMIN_HEADER: "wrong-key-0123456789"})
            call(headers={GRPC_ADMIN_HEADER: KEY})
        assert client.is_server_ready() and client.get_inference_statistics("qa")  # open: health, statistics


def test_the_stubs_shared_memory_cannot_be_registered_and_the_server_keeps_serving(serve, heads):
    """The crash of the probe: register the Python backend stub's own region as an output buffer, make a request
    write its answer there, send another. Each step that needs shared memory is refused now."""
    stubs = backend_stubs(serve.tritonserver, Path("/"))
    region = next(name for name in _mapped_regions(stubs[0].pid))
    status, answer = serve.call("POST", "/v2/systemsharedmemory/region/stub/register",
                                {"key": f"/{region}", "offset": 0, "byte_size": 4096})
    assert status == 403, (status, answer)
    question, context = "Who wrote it?", "Ada wrote it."
    status, answer = serve.infer("qa", [_text("question", question), _text("context", context)],
                                 outputs=[{"name": "answers", "parameters": {"shared_memory_region": "stub",
                                                                              "shared_memory_byte_size": 4096}}])
    assert status == 404 and "'stub'" in answer["error"], (status, answer)  # no such region: nothing written
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc}") as client:
        with pytest.raises(InferenceServerException, match=GRPC_ADMIN_HEADER):
            client.register_system_shared_memory("stub", f"/{region}", 4096)
    for _ in range(3):
        status, answer = serve.infer("qa", [_text("question", question), _text("context", context)])
        assert status == 200 and json.loads(answer["outputs"][0]["data"][0]) == heads[QA_NAME](question=question,
                                                                                                 context=context)
    assert serve.process.poll() is None


def _mapped_regions(pid: int) -> list[str]:
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({Path(line.split(maxsplit=5)[5]).name for line in lines
                   if len(line.split(maxsplit=5)) == 6 and SHM_PREFIX in line})


def test_the_model_config_does_not_show_where_the_bundle_is(serve, tiny_bundles):
    status, config = serve.call("GET", "/v2/models/qa/config", key=KEY)
    assert status == 200
    text = json.dumps(config)
    assert config["parameters"]["bundle"]["string_value"] == "bundle"
    assert str(tiny_bundles[QA_NAME].path.resolve()) not in text and str(tiny_bundles[QA_NAME].path) not in text


CLIENT_MISTAKES = {
    "empty context": ("qa", [_text("question", "Who?"), _text("context", "")], "input 'context' is empty"),
    "top_k of 0": ("mlm", [_text("text", "Paris is the [MASK] of France."), _int("top_k", 0)], "top_k must be"),
    "top_k of -3": ("qa", [_text("question", "Who?"), _text("context", "Ada."), _int("top_k", -3)], "top_k must be"),
    "max_seq_len 100000": ("qa", [_text("question", "Who?"), _text("context", "Ada wrote it."),
                                  _int("max_seq_len", 100000)], "max_seq_len must be an integer from 1 to 65536"),
    "max_seq_len above the model": ("qa", [_text("question", "Who?"), _text("context", "Ada wrote it."),
                                           _int("max_seq_len", 4096)], "pass max_seq_len <="),
    "fill-mask without its mask": ("mlm", [_text("text", "There is no mask here.")], "no mask token"),
    "10 MB context": ("qa", [_text("question", "Who?"), _text("context", "Ada wrote it. " * 750_000)],
                      "more than this server's limit"),
    "one bad example of a batch": ("qa", [_text("question", ["Who?", ""]), _text("context", ["Ada.", "Ada."])],
                                   "example 1 of 2: input 'question' is empty"),
}


@pytest.mark.parametrize("case", list(CLIENT_MISTAKES))
def test_a_client_mistake_is_a_400_and_the_server_keeps_answering(serve, case):
    model, inputs, message = CLIENT_MISTAKES[case]
    status, answer = serve.infer(model, inputs)
    assert status == 400 and message in answer["error"], (status, answer)
    status, _ = serve.infer("qa", [_text("question", "Who?"), _text("context", "Ada wrote it.")])
    assert status == 200


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_invalid_utf8_is_invalid_argument(serve, protocol):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    module = httpclient if protocol == "http" else grpcclient
    url = f"127.0.0.1:{serve.http if protocol == 'http' else serve.grpc}"
    with module.InferenceServerClient(url) as client:
        inputs = [module.InferInput("text", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[b"a [MASK] \xff"]], dtype=np.object_))
        with pytest.raises(InferenceServerException, match="not valid UTF-8") as raised:
            client.infer("mlm", inputs)
    assert raised.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")


@pytest.mark.parametrize("count", [2, MAX_BATCH])
def test_a_batch_of_examples_in_one_request_is_answered_example_by_example(serve, heads, count):
    questions = ["Who wrote it?", "When was it written?", "Where?", "What did Ada write?"][:count]
    context = "The essay was written by Ada Lovelace in 1843 in London."
    status, answer = serve.infer("qa", [_text("question", questions), _text("context", [context] * count)])
    assert status == 200, answer
    output = answer["outputs"][0]
    assert output["shape"] == [count, 1]
    assert [json.loads(item) for item in output["data"]] == [heads[QA_NAME](question=q, context=context)
                                                             for q in questions]
    mask = heads[MLM_NAME].tokenizer_settings.mask_token
    texts = [f"Paris is the {mask} of France.", f"The {mask} sat on the mat."]
    status, answer = serve.infer("mlm", [_text("text", texts)])
    assert [json.loads(item) for item in answer["outputs"][0]["data"]] == [heads[MLM_NAME](t) for t in texts]


def test_a_batch_above_max_batch_size_is_refused_by_triton(serve):
    status, answer = serve.infer("mlm", [_text("text", ["a [MASK]."] * (MAX_BATCH + 1))])
    assert status == 400 and "batch" in answer["error"], (status, answer)


def test_the_triton_log_is_a_private_file_not_the_console(tiny_bundles, tmp_path):
    server = Serve(tiny_bundles, tmp_path)  # no --log-file: a new distilrt-serve-*.log
    summary = next(line for line in server.lines if "model(s) ready" in line)
    log = Path(summary.split("Triton's log: ")[1].split(" (pid")[0])
    try:
        assert log.name.startswith("distilrt-serve-") and log.suffix == ".log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert server.stop() == 0
        assert "successfully unloaded 'qa'" in log.read_text() and "unloaded" not in server.output
    finally:
        server.stop()
        log.unlink(missing_ok=True)


def test_open_api_opens_that_api_only(tiny_bundles, tmp_path):
    server = Serve(tiny_bundles, tmp_path, "--open-api", "logging", "--log-file", str(tmp_path / "triton.log"))
    try:
        assert server.call("GET", "/v2/logging")[0] == 200
        for api in set(RESTRICTED_APIS) - {"logging"}:
            assert server.call(*RESTRICTED_CALLS[api])[0] == 403, api
        assert "opened: logging" in server.output
    finally:
        assert server.stop() == 0


def test_a_dead_backend_stub_stops_serve_with_exit_1_and_no_shared_memory_left(tiny_bundles, tmp_path):
    server = Serve(tiny_bundles, tmp_path, "--log-file", str(tmp_path / "triton.log"))
    try:
        stubs = backend_stubs(server.tritonserver, Path("/"))
        assert len(stubs) == 2, stubs
        regions = {name for stub in stubs for name in _mapped_regions(stub.pid)}
        assert regions and all((SHM_DIR / name).exists() for name in regions)
        qa_stub = next(stub for stub in stubs if f"qa{os.sep}1" in Path(f"/proc/{stub.pid}/cmdline").read_text())
        os.kill(qa_stub.pid, signal.SIGKILL)
        killed = time.monotonic()
        code = server.process.wait(timeout=30)
        took = time.monotonic() - killed
        server.stop()
        assert code == 1 and took < 10, (code, took, server.output)
        assert "stub of qa" in server.output and "exiting 1" in server.output, server.output
        assert not [name for name in regions if (SHM_DIR / name).exists()], "shared memory left in /dev/shm"
        assert not Path(f"/proc/{server.tritonserver}").exists() or _state(server.tritonserver) == "Z"
    finally:
        server.stop()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_sigterm_after_a_stub_death_is_prompt_and_leaves_no_shared_memory(tiny_bundles, tmp_path):
    """Triton's graceful shutdown with a dead stub waited its whole exit timeout (30 s) and left the region."""
    server = Serve(tiny_bundles, tmp_path, "--log-file", str(tmp_path / "triton.log"), "--exit-timeout", "30")
    try:
        stubs = backend_stubs(server.tritonserver, Path("/"))
        regions = {name for stub in stubs for name in _mapped_regions(stub.pid)}
        os.kill(stubs[0].pid, signal.SIGKILL)
        while Path(f"/proc/{stubs[0].pid}").exists() and _state(stubs[0].pid) != "Z":
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = server.process.wait(timeout=60)
        assert code == 1 and time.monotonic() - signalled < 5, (code, time.monotonic() - signalled, server.output)
        assert not [name for name in regions if (SHM_DIR / name).exists()], "shared memory left in /dev/shm"
    finally:
        server.stop()
