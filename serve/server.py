"""`distilrt serve`: the given bundles as Triton models on pytriton's bundled tritonserver.

Each bundle becomes one Python-backend model (repository form ``python``, the bundle referenced where it is)
in a temporary repository; tritonserver runs it with Triton's own dynamic batcher, health, readiness, model
metadata and metrics, over HTTP and gRPC (KServe v2). The Python backend answers each request of a batch on
its own, errors included, which pytriton's callable API cannot (an exception there fails the whole batch).
SIGTERM or Ctrl-C is passed on to tritonserver, which stops taking requests and finishes those in flight.

It listens on 127.0.0.1 and keeps the APIs a text client never needs behind an admin key (serve/access.py).
It watches the Python backend's stub processes: when one dies, Triton would keep answering ready while failing
every request of that model, so `distilrt serve` kills tritonserver, removes its /dev/shm regions and exits 1
for its supervisor to restart it (serve/stubs.py). Triton's own log goes to a file (mode 0600), not the console.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from distilrt.backends import Closable
from distilrt.errors import ServerError
from distilrt.serve.access import Access
from distilrt.serve.environment import backend_directory, find_triton, server_environment
from distilrt.serve.repository import ServingConfig, models_from_args, write_repository
from distilrt.serve.stubs import Stub, backend_stubs, remove_regions, shm_regions

STUB_CHECK_INTERVAL_S = 0.5  # how often `distilrt serve` looks at the backend stubs (a dead one is noticed within it)
STUB_DIED_EXIT_CODE = 1


@dataclass(frozen=True)
class Ports:
    http: int = 8000  # Triton's defaults
    grpc: int = 8001
    metrics: int = 8002


class TritonProcess(Closable):
    """A tritonserver process on a model repository, with the environment its Python backend needs."""

    def __init__(self, repository: Path, ports: Ports = Ports(), *, access: Access | None = None,
                 log: Path | None = None, exit_timeout_s: int = 30, log_verbose: int = 0,
                 expected_stubs: Mapping[str, int] | None = None):
        self.repository = Path(repository)
        self.ports = ports
        self.access = access or Access()
        self.expected_stubs = dict(expected_stubs or {})  # stubs per model: one per instance of a Python model
        self._stubs: list[Stub] = []
        self._regions: set[str] = set()  # the Python backend's /dev/shm regions, removed if tritonserver cannot
        self.exit_timeout_s = exit_timeout_s
        self._log = log
        self._log_verbose = log_verbose
        self._process: subprocess.Popen | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="distilrt-triton-")

    @property
    def url(self) -> str:
        return f"{self.access.client_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.access.client_host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"{self.access.client_host}:{self.ports.metrics}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self, backends: Path, install_server: Path) -> list[str]:
        return [str(install_server), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                f"--http-port={self.ports.http}", f"--grpc-port={self.ports.grpc}",
                f"--metrics-port={self.ports.metrics}", f"--exit-timeout-secs={self.exit_timeout_s}",
                "--strict-readiness=true", "--exit-on-error=true", f"--log-verbose={self._log_verbose}",
                *self.access.arguments()]

    def start(self) -> TritonProcess:
        install = find_triton()
        env = server_environment(install)
        backends = backend_directory(install, Path(self._workdir.name) / "backends")
        # The log holds request errors and paths: only its owner may read it.
        output = os.fdopen(os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") \
            if self._log is not None else None
        self._output = output
        # Its own process group: the Python backend's stub processes are in it, and do not exit when tritonserver
        # is killed (measured: an orphaned stub lived on), so kill() and close() end the whole group.
        self._process = subprocess.Popen(self.command(backends, install.server), env=env, stdout=output,
                                         stderr=subprocess.STDOUT if output else None, preexec_fn=_die_with_parent,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until every model is loaded (strict readiness); ServerError if tritonserver exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise ServerError(f"tritonserver exited (code {code}) before its models were ready{self._log_hint()}")
            if self.ready():
                self._watch_stubs()
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready after {timeout_s:g} s{self._log_hint()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _watch_stubs(self) -> None:
        """Note the backend stubs of the ready server and the shared-memory regions they use."""
        self._stubs = backend_stubs(self._process.pid, self.repository)
        self._regions |= shm_regions([self._process.pid, *(stub.pid for stub in self._stubs)])
        # A stub that died between readiness and this look is not among them: count them per model.
        for model, count in self.expected_stubs.items():
            missing = count - sum(stub.model == model for stub in self._stubs)
            self._stubs += [Stub(pid=0, start_time=0, model=model)] * max(0, missing)  # pid 0: never alive

    def dead_stubs(self) -> list[Stub]:
        """The backend stubs that should be running since the server became ready and are not."""
        return [stub for stub in self._stubs if not stub.alive()]

    def poll(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def terminate(self) -> None:
        """Ask tritonserver to shut down gracefully (it finishes requests in flight, up to exit_timeout_s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float | None = None) -> int:
        assert self._process is not None
        return self._process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL tritonserver and its backend stubs (a crash, as far as clients can tell), then remove the
        shared-memory regions they leave."""
        if self._process is not None:
            if self._process.poll() is None:
                self._regions |= shm_regions([self._process.pid, *(stub.pid for stub in
                                                                   backend_stubs(self._process.pid, self.repository))])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            remove_regions(self._regions)

    def close(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after its exit timeout and a margin."""
        if self._process is not None:
            self.terminate()
            try:
                self._process.wait(self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                pass
            self.kill()  # whatever is left of its group (after a graceful exit, nothing)
        if getattr(self, "_output", None) is not None:
            self._output.close()
            self._output = None
        self._workdir.cleanup()

    def _log_hint(self) -> str:
        if self._log is None:
            return " (see its output above)"
        try:
            tail = Path(self._log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        except OSError:
            return ""
        return f"; the end of its log ({self._log}):\n" + "\n".join(tail)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies, so a killed `distilrt serve` leaves no orphan server."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def batch_dependent(bundle) -> bool:
    """Whether a request's outputs may depend on the others in its batch: its build found that it answers
    differently alone and batched (published with --allow-batch-variant), or, in a bundle built before that was
    checked, it is int8-dynamic with ONNX Runtime's per-tensor activation scales (docs/design.md#batch-invariance)."""
    invariant = bundle.manifest.batch_invariant
    if invariant is not None:
        return not invariant
    precision = bundle.manifest.stage("precision") or {}
    return precision.get("variant") == "int8-dynamic" and precision.get("activation_scales", "tensor") == "tensor"


def serve(bundle_args: list[str], config: ServingConfig, ports: Ports = Ports(), *, access: Access | None = None,
          log_file: Path | None = None, verbose: bool = False, ready_timeout_s: float = 300.0,
          exit_timeout_s: int = 30, on_ready=None) -> int:
    """Serve the bundles until SIGTERM or Ctrl-C: tritonserver's exit code (0 after a graceful shutdown), or 1
    when a backend stub died. Triton's log goes to ``log_file``, a new distilrt-serve-*.log in the temporary
    directory without one, or the console with ``verbose``."""
    access = access or Access()
    models = models_from_args(bundle_args)
    if config.dynamic_batching:
        for name, bundle in models:
            if batch_dependent(bundle):
                print(f"distilrt serve: warning: {name} ({bundle.variant}) was not verified to answer the same alone and "
                      "batched: a batched request's scores, and sometimes its answer, can differ from the same request "
                      "alone; rebuild it (int8-dynamic now scales each token on its own), or pass --no-dynamic-batching "
                      "for exactly the in-process answers", file=sys.stderr)
    if log_file is None and not verbose:
        handle, name = tempfile.mkstemp(prefix="distilrt-serve-", suffix=".log")  # mode 0600
        os.close(handle)
        log_file = Path(name)
    with tempfile.TemporaryDirectory(prefix="distilrt-serve-") as tmp:
        repository = Path(tmp) / "repository"
        write_repository(models, repository, config, form="python", copy_bundles=False)
        server = TritonProcess(repository, ports, access=access, log=log_file, exit_timeout_s=exit_timeout_s,
                               expected_stubs={name: config.instances for name, _ in models})
        stop = {"signal": None, "dead": []}

        def shut_down(signum, _frame):
            stop["signal"] = signum
            stop["dead"] = server.dead_stubs()  # a dead stub would make a graceful shutdown wait its whole timeout
            if not stop["dead"]:
                server.terminate()

        previous = {sig: signal.signal(sig, shut_down) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.start()
            try:
                server.wait_ready(ready_timeout_s)
            except ServerError:
                if stop["signal"] is None:
                    raise
            if stop["signal"] is None:
                log = f"Triton's log: {log_file}" if log_file is not None else "Triton's log: above"
                print(f"distilrt serve: {len(models)} model(s) ready: {', '.join(name for name, _ in models)}; "
                      f"HTTP {access.host}:{ports.http}, gRPC {access.host}:{ports.grpc}, "
                      f"metrics {access.host}:{ports.metrics}; "
                      f"{access.summary()}; {log} (pid {os.getpid()})", file=sys.stderr, flush=True)
                if on_ready is not None:
                    on_ready(models)
            return _run(server, stop)
        finally:
            server.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run(server: TritonProcess, stop: dict) -> int:
    """Wait for tritonserver to exit, watching its backend stubs until asked to stop."""
    while True:
        code = server.poll()
        if code is not None:
            return code
        dead = stop["dead"] or ([] if stop["signal"] is not None else server.dead_stubs())
        if dead:
            started = time.monotonic()
            server.kill()
            stubs = ", ".join(f"{stub.model} ({f'pid {stub.pid}' if stub.pid else 'gone when the server was ready'})"
                              for stub in dead)
            print(f"distilrt serve: the Python backend stub of {stubs} died; Triton does not restart it and would go "
                  "on reporting ready while failing every request, so tritonserver was killed "
                  f"({time.monotonic() - started:.1f} s) and its shared memory removed; exiting "
                  f"{STUB_DIED_EXIT_CODE} for a supervisor to restart distilrt serve", file=sys.stderr, flush=True)
            return STUB_DIED_EXIT_CODE
        time.sleep(STUB_CHECK_INTERVAL_S)
