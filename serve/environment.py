"""The tritonserver that nvidia-pytriton bundles, and the environment its Python backend needs to run here.

pytriton's wheel holds a tritonserver binary, its libraries (nvidia_pytriton.libs/), the Python backend
(libtriton_python.so, triton_python_backend_utils.py) and one backend stub per Python version. The stub embeds
libpython3.X.so.1.0 and then imports this environment's packages (numpy, tokenizers, distilrt). It must get the
libpython of the very interpreter that made the environment: another build of the same version (the system's
Python 3.11 next to a pyenv 3.11) fails inside the stub with "'_thread.RLock' object has no attribute
'_recursion_count'" (docs/design.md#serving-and-transformers-5). So the server's LD_LIBRARY_PATH starts with
the directory of this interpreter's own libpython, and an interpreter without a shared libpython is refused
with that explanation. PATH starts with the environment's bin/, so the embedded interpreter finds the venv.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from distilrt.errors import CapabilityError

INSTALL_HINT = 'pip install "distilrt[serve]" (nvidia-pytriton bundles tritonserver with its Python backend)'


@dataclass(frozen=True)
class TritonInstall:
    """The files of pytriton's bundled tritonserver."""

    server: Path  # the tritonserver binary
    libs: Path  # the libraries it links (nvidia_pytriton.libs)
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version


def find_triton() -> TritonInstall:
    """pytriton's tritonserver, or CapabilityError saying what to install."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise CapabilityError(f"serving needs tritonserver: {INSTALL_HINT}")
    root = Path(spec.origin).parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(server=root / "tritonserver" / "bin" / "tritonserver",
                            libs=root.parent / "nvidia_pytriton.libs",
                            python_backend=root / "tritonserver" / "backends" / "python",
                            stub=root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub")
    if not install.stub.is_file():
        raise CapabilityError(f"nvidia-pytriton at {root} has no Python backend stub for Python {version}; "
                              "serve from a Python it supports (3.8 to 3.13) or upgrade nvidia-pytriton")
    missing = [str(path) for path in (install.server, install.libs, install.python_backend) if not path.exists()]
    if missing:
        raise CapabilityError(f"nvidia-pytriton at {root} lacks {missing}; reinstall it: {INSTALL_HINT}")
    return install


def python_library() -> Path | None:
    """This interpreter's own shared libpython (the one the backend stub must load), or None if it has none."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    libdir = sysconfig.get_config_var("LIBDIR")
    if not name or not libdir:
        return None
    # Debian-style builds keep it under LIBDIR/<multiarch>.
    candidates = [Path(libdir) / name, Path(libdir) / (sysconfig.get_config_var("MULTIARCH") or "") / name]
    return next((path for path in candidates if path.is_file()), None)


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to start tritonserver with: this interpreter's libpython first, then pytriton's libs."""
    env = dict(os.environ if base is None else base)
    library = python_library()
    if library is None:
        raise CapabilityError(
            f"the Python at {sys.executable} ({sys.version.split()[0]}) has no shared libpython, and Triton's Python "
            f"backend stub must load the libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0 of the "
            "interpreter this environment was made from (another build fails with \"'_thread.RLock' object has no "
            "attribute '_recursion_count'\"); make the venv from a Python built with --enable-shared (Debian's "
            "/usr/bin/python3, or pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    paths = [str(library.parent), str(install.libs)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))
    env["PATH"] = ":".join([str(Path(sys.exec_prefix) / "bin"), env.get("PATH", "")])
    return env


def backend_directory(install: TritonInstall, where: Path) -> Path:
    """A --backend-directory holding the Python backend with the stub of this Python version, made in ``where``."""
    python = Path(where) / "python"
    python.mkdir(parents=True, exist_ok=True)
    for file in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copyfile(install.python_backend / file, python / file)
    shutil.copy2(install.stub, python / "triton_python_backend_stub")  # keeps its executable bit
    return Path(where)
