"""Atomic file writes: nothing descend writes is ever left half-done.

Every file goes to a temporary name in the same folder (``.NAME.XXXXXXXX.tmp``), is
flushed and fsync'ed, given the permissions of a normally created file (``0o666``
less the umask, so ``0644`` under the usual umask ``022``), then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows). A crash or Ctrl-C leaves
either the old file or the new one, never a truncated mix; an exception removes the
temporary file, and only a kill can leave one behind, which
:func:`remove_temp_files` clears (call it on a run directory before resuming it).

A full disk, a read-only file system, an exhausted quota or a folder without write
permission is a :class:`~descend.errors.DiskError` naming the file and the fix; the
previous file is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from descend.errors import DiskError

# What to do about each disk error; the errno names the cause.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full: free space on it or choose a run directory on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free space or ask for a larger quota",
    errno.EROFS: "the file system is read-only: choose a writable run directory",
    errno.EACCES: "no permission to write there: fix the folder's permissions or choose another run directory",
    errno.EPERM: "no permission to write there: fix the folder's permissions or choose another run directory",
    errno.EIO: "the disk reported an input/output error: check the disk (or network file system) and retry",
}

# Temporary names of interrupted atomic writes: ours (tempfile.mkstemp: 8 characters of
# [a-z0-9_]) and those safetensors' save_file makes itself (Rust's tempfile crate: ".tmp"
# and 6 alphanumerics), which older descend versions let it create.
TEMP_NAMES = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp|\.tmp[A-Za-z0-9]{6}")


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def disk_error(exc: BaseException, path: str | os.PathLike) -> DiskError | None:
    """``exc`` as a DiskError naming ``path`` if it is a disk error (full, read-only, ...), else None.

    Recognises ``OSError.errno`` and the ``(os error N)`` that Rust libraries such as
    safetensors put in their messages.
    """
    if isinstance(exc, DiskError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code not in DISK_ERRORS:
        return None
    path = Path(path)
    kept = f"; the previous {path.name} is unchanged" if os.path.isfile(path) else ""
    err = DiskError(f"cannot write {path}: {os.strerror(code)}{kept}; {DISK_ERRORS[code]}")
    err.errno = code  # (no .filename: OSError would then print "[Errno N] None: path" instead of the message)
    return err


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) if needed; a disk error is a DiskError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, path) or exc from None
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    For writers that insist on a file name (matplotlib)::

        with atomic_path("curves.png") as tmp:
            fig.savefig(tmp)

    The file gets :func:`file_mode` even if the writer replaced the temporary file by
    one of its own. Disk errors, from the block or from the rename, become DiskError.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes 0600, and so may the writer's own temp file
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        err = disk_error(exc, path) if isinstance(exc, Exception) else None
        if err is None or err is exc:
            raise
        raise err from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log file (JSONL) and flush it to disk.

    An append of a single short line is as close to atomic as a log needs: a reader
    sees whole lines. If the write fails (a full disk), the file is cut back to its
    previous length, so no partial line stays, and a DiskError says why.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise disk_error(exc, path) or exc from None
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise disk_error(exc, path) or exc from None
    finally:
        os.close(fd)


def remove_temp_files(directory: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``directory``; return them.

    Matches ``.NAME.XXXXXXXX.tmp`` (:func:`atomic_path`) and ``.tmpXXXXXX`` (safetensors'
    own temporary files). Call it only while no other process writes into ``directory``
    (a run resuming), or it may delete a write in progress.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in sorted(directory.rglob(".*") if recursive else directory.glob(".*")):
        if TEMP_NAMES.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise disk_error(exc, p) or exc from None
            removed.append(p)
    return removed
