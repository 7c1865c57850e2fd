"""Files and directories that are whole or absent: staged in a temp dir or file beside their destination,
then renamed into place (a rename on one filesystem is atomic). Bundles, reports and JSON results use these."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from distilrt.errors import CapabilityError


def sha256_file(path) -> str:
    """sha256 of a file, given its path or an open binary file (read to its end)."""
    if not isinstance(path, (str, os.PathLike)):
        return _sha256_of(path)
    with open(path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


# Every publish stages into .NAME-staging-* beside NAME; a replaced tree is moved to .NAME-retired-* to be removed.
# What a killed build leaves under those names is removed by the next staging_dir of that destination.
_LEFTOVER_KINDS = ("staging", "retired")
# A published bundle stays a real directory where the filesystem can exchange two names (renameat2 with
# RENAME_EXCHANGE: Linux 3.15+, on ext4, xfs, btrfs, tmpfs, overlayfs). Elsewhere NAME is published as a symlink to
# a versioned .NAME-v-* directory, and a new version replaces the link with one rename (see replace_dir).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@contextmanager
def staging_dir(destination: Path) -> Iterator[Path]:
    """A temp dir on the destination's filesystem (so publishing is atomic), removed unless published.

    The staging dir is flock()ed for as long as this process works in it; the kernel drops the lock when the
    process dies, however it dies. So a leftover of a killed build is exactly one whose lock can be taken, and
    the leftovers of earlier builds of this destination are removed here. Two concurrent builds are safe: a lock
    on the parent directory covers the moment between creating a staging dir and locking it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with _locked(destination.parent):
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-staging-", dir=destination.parent))
        lock = _lock(staging)
        stale = _unlocked_leftovers(destination)
    try:
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; what is published is an ordinary directory
        yield staging
    finally:
        os.close(lock)
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, destination: Path) -> Path:
    """Publish a staged directory at ``destination`` so that a reader finds the old tree or the new one at every
    instant, never none; the old one is removed after.

    Where the destination exists, renameat2(RENAME_EXCHANGE) swaps the two names in one step and the old tree,
    now under the staging name, is retired. Two renames (old aside, new in) would leave the name missing between
    them, for as long as a killed build leaves it. Where the filesystem cannot exchange, the destination is a
    symlink to a versioned directory and a new symlink is renamed over it (also one step); a real directory there
    cannot be replaced so, and is refused rather than replaced with a window."""
    if destination.is_symlink() or (_renameat2() is None and not destination.exists()):
        return _replace_link(staging, destination)
    try:
        os.rename(staging, destination)  # no destination yet (or an empty directory): one atomic rename
        return destination
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if not _exchange(staging, destination):
        raise CapabilityError(f"{destination} cannot be replaced atomically: this filesystem cannot exchange two "
                              "names (renameat2 RENAME_EXCHANGE); remove it first, or publish to ext4, xfs, btrfs or "
                              "tmpfs")
    _after_exchange(staging)
    retired = staging.with_name(f".{destination.name}-retired-{staging.name.rpartition('-')[2]}")
    try:
        os.rename(staging, retired)
    except FileNotFoundError:  # a concurrent build's clean-up took it first (an unlocked leftover to it)
        return destination
    shutil.rmtree(retired, ignore_errors=True)
    return destination


def _after_exchange(staging: Path) -> None:
    """Nothing: where tests kill a publish at its worst moment (the old tree is under the staging name)."""


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE) through libc; False where the libc or the
    filesystem cannot (glibc < 2.28, musl, another OS, or EINVAL/ENOSYS from the filesystem)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _replace_link(staging: Path, destination: Path) -> Path:
    """The fallback where names cannot be exchanged: NAME -> .NAME-v-<id>; a new link replaces it in one rename."""
    suffix = staging.name.rpartition("-")[2]
    version = staging.rename(destination.with_name(f".{destination.name}-v-{suffix}"))
    link = destination.with_name(f".{destination.name}-link-{suffix}")
    link.symlink_to(version.name)
    old = destination.parent / os.readlink(destination) if destination.is_symlink() else None
    os.rename(link, destination)
    if old is not None and old.name.startswith(f".{destination.name}-v-") and old.parent == destination.parent:
        shutil.rmtree(old, ignore_errors=True)
    return destination


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock(directory: Path) -> int:
    fd = os.open(directory, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _unlocked_leftovers(destination: Path) -> list[Path]:
    """The .NAME-staging-* and .NAME-retired-* directories no live process holds a lock on (call with the parent
    locked). A retired tree is never locked: it is the old bundle after an exchange, which nobody writes."""
    found = []
    for kind in _LEFTOVER_KINDS:
        for path in destination.parent.glob(f".{destination.name}-{kind}-*"):
            if path.is_symlink() or not path.is_dir():
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found.append(path)
            except BlockingIOError:
                pass  # a live build's staging dir
            finally:
                os.close(fd)
    return found


def write_json(path: Path, data) -> None:
    """Write JSON via a temp file and a rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):  # a Manifest, or another read-only mapping
        return dict(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def cache_dir(*parts: str) -> Path:
    """distilrt's cache (timing caches, fetched real weights): $DISTILRT_CACHE_DIR, else ~/.cache/distilrt."""
    return Path(os.environ.get("DISTILRT_CACHE_DIR", Path.home() / ".cache" / "distilrt")).joinpath(*parts)
