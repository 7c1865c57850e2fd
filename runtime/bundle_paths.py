"""A bundle is untrusted data: every file name its manifest gives is confined to the bundle directory.

A name must be a relative path without ``..`` that, with symlinks resolved, stays inside the bundle, and must
name a regular file (not a directory, FIFO or device). These checks run before any file is opened or hashed,
so a manifest cannot make distilrt read, hash (and print a hash prefix of) or copy a file outside its bundle.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from distilrt.errors import BundleError

REBUILD_HINT = "rebuild it with `distilrt build`"


def confined_name(name: object, field: str, where: str = "manifest.json") -> str:
    """``name`` if it is a plain relative path (no absolute path, no ``..``, no empty or NUL); else BundleError
    naming ``field``. Purely lexical: ``member_path`` also resolves symlinks."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: {field} must be a file name (a non-empty string), got {name!r}; {REBUILD_HINT}")
    parts = PurePosixPath(name).parts
    if "\0" in name or "\\" in name or PurePosixPath(name).is_absolute() or ".." in parts or "." in name.split("/"):
        raise BundleError(f"{where}: {field} names {name!r}, which is not a plain relative path inside the bundle; "
                          f"{REBUILD_HINT}")
    return name


def member_path(bundle: Path, name: object, field: str, where: str = "manifest.json") -> Path:
    """The path of ``name`` inside ``bundle`` once it is known to resolve inside it and to be a regular file;
    BundleError naming ``field`` otherwise. Nothing is opened."""
    name = confined_name(name, field, where)
    root = bundle.resolve()
    path = bundle / name
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise BundleError(f"{where}: {field} {name!r} leads out of the bundle (it resolves to {resolved}): a bundle's "
                          f"files must be inside its directory; {REBUILD_HINT}")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle} is missing {name} (listed in its manifest); {REBUILD_HINT}") from None
    except OSError as e:
        raise BundleError(f"bundle {bundle}: {name} cannot be read ({e}); {REBUILD_HINT}") from e
    if not stat.S_ISREG(mode):
        raise BundleError(f"{where}: {field} {name!r} is not a regular file (a directory, FIFO, socket or device); "
                          f"{REBUILD_HINT}")
    return resolved


def open_member(path: Path):
    """Open a file ``member_path`` checked for reading, refusing it if it was swapped for a non-regular file since
    (O_NONBLOCK so that a FIFO put there cannot block the open)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path} is not a regular file; {REBUILD_HINT}")
    return os.fdopen(fd, "rb")
