"""`distilrt serve`: the given bundles as Triton models on pytriton's bundled tritonserver.

Each bundle becomes one Python-backend model (repository form ``python``, the bundle referenced where it is)
in a temporary repository; tritonserver runs it with Triton's own dynamic batcher, health, readiness, model
metadata and metrics, over HTTP and gRPC (KServe v2). The Python backend answers each request of a batch on
its own, errors included, which pytriton's callable API cannot (an exception there fails the whole batch).
SIGTERM or Ctrl-C is passed on to tritonserver, which stops taking requests and finishes those in flight.
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
from dataclasses import dataclass
from pathlib import Path

from distilrt.backends import Closable
from distilrt.errors import ServerError
from distilrt.serve.environment import backend_directory, find_triton, server_environment
from distilrt.serve.repository import ServingConfig, models_from_args, write_repository


@dataclass(frozen=True)
class Ports:
    http: int = 8000  # Triton's defaults
    grpc: int = 8001
    metrics: int = 8002


class TritonProcess(Closable):
    """A tritonserver process on a model repository, with the environment its Python backend needs."""

    def __init__(self, repository: Path, ports: Ports = Ports(), *, log: Path | None = None,
                 exit_timeout_s: int = 30, log_verbose: int = 0):
        self.repository = Path(repository)
        self.ports = ports
        self.exit_timeout_s = exit_timeout_s
        self._log = log
        self._log_verbose = log_verbose
        self._process: subprocess.Popen | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="distilrt-triton-")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self, backends: Path, install_server: Path) -> list[str]:
        return [str(install_server), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                f"--http-port={self.ports.http}", f"--grpc-port={self.ports.grpc}",
                f"--metrics-port={self.ports.metrics}", f"--exit-timeout-secs={self.exit_timeout_s}",
                "--strict-readiness=true", "--exit-on-error=true", f"--log-verbose={self._log_verbose}"]

    def start(self) -> TritonProcess:
        install = find_triton()
        env = server_environment(install)
        backends = backend_directory(install, Path(self._workdir.name) / "backends")
        output = open(self._log, "ab") if self._log is not None else None  # noqa: SIM115 (closed in stop)
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
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready after {timeout_s:g} s{self._log_hint()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def terminate(self) -> None:
        """Ask tritonserver to shut down gracefully (it finishes requests in flight, up to exit_timeout_s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float | None = None) -> int:
        assert self._process is not None
        return self._process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL tritonserver and its backend stubs (a crash, as far as clients can tell)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

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
    """Whether a request's outputs depend on the others in its batch: dynamic int8 quantizes activations with
    one scale per tensor, the whole batch (padding included), measured in docs/design.md#serving-and-transformers-5."""
    precision = bundle.manifest.stage("precision") or {}
    return precision.get("variant") == "int8-dynamic"


def serve(bundle_args: list[str], config: ServingConfig, ports: Ports = Ports(), *, ready_timeout_s: float = 300.0,
          exit_timeout_s: int = 30, on_ready=None) -> int:
    """Serve the bundles until SIGTERM or Ctrl-C; tritonserver's exit code (0 after a graceful shutdown)."""
    models = models_from_args(bundle_args)
    if config.dynamic_batching:
        for name, bundle in models:
            if batch_dependent(bundle):
                print(f"distilrt serve: warning: {name} is {bundle.variant}, whose activation scales are computed over "
                      "the whole batch: a batched request's scores, and sometimes its answer, can differ from the same "
                      "request alone; --no-dynamic-batching gives exactly the in-process answers", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="distilrt-serve-") as tmp:
        repository = Path(tmp) / "repository"
        write_repository(models, repository, config, form="python", copy_bundles=False)
        server = TritonProcess(repository, ports, exit_timeout_s=exit_timeout_s)
        stop = {"signal": None}

        def shut_down(signum, _frame):
            stop["signal"] = signum
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
                print(f"distilrt serve: {len(models)} model(s) ready: {', '.join(name for name, _ in models)}; "
                      f"HTTP {ports.http}, gRPC {ports.grpc}, metrics {ports.metrics} (pid {os.getpid()})",
                      file=sys.stderr, flush=True)
                if on_ready is not None:
                    on_ready(models)
            while True:
                try:
                    return server.wait()
                except InterruptedError:
                    continue
        finally:
            server.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
