"""Where data sets are looked for, and how a missing one is fetched.

Search order for a data set kept in folder ``<folder>`` (e.g. ``mnist``):

1. ``--data-dir`` / ``data_dir=``: ``<data_dir>/<folder>``, then ``<data_dir>`` itself;
2. ``$DESCEND_DATA`` (the folder holding ``mnist/``): ``$DESCEND_DATA/<folder>``, then ``$DESCEND_DATA``;
3. the user cache: ``<cache>/<folder>``, where ``<cache>`` is ``$DESCEND_CACHE`` or
   ``$XDG_CACHE_HOME/descend`` or ``~/.cache/descend``;
4. the copy bundled with the package (``descend/data/bundled/<folder>``; MNIST only).

All files of a set must be found together in one folder. A set missing everywhere
is downloaded into the user cache, unless ``download=False`` or ``DESCEND_OFFLINE=1``. Each downloaded file is checked against its published MD5
before it is renamed into place (atomically), so a cut connection or a tampered
mirror never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from descend.errors import DataError, DataNotFound

BUNDLED = Path(__file__).resolve().parent / "bundled"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name, its MD5 as distributed and where to get it."""

    name: str
    md5: str
    mirrors: tuple[str, ...]


def cache_dir() -> Path:
    """The user cache folder of descend (``$DESCEND_CACHE``, ``$XDG_CACHE_HOME/descend`` or ``~/.cache/descend``)."""
    if os.environ.get("DESCEND_CACHE"):
        return Path(os.environ["DESCEND_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "descend"


def search_dirs(folder: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data set ``folder``, in order."""
    dirs: list[Path] = []
    for root in (data_dir, os.environ.get("DESCEND_DATA") or None):
        if root is not None:
            root = Path(root).expanduser()
            dirs += [root / folder, root]
    dirs.append(cache_dir() / folder)
    if (BUNDLED / folder).is_dir():
        dirs.append(BUNDLED / folder)
    return dirs


def find_file(name: str, directory: Path) -> Path | None:
    """``directory/name``, or the same file without its ``.gz`` (already unpacked)."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(
    folder: str,
    files: list[RemoteFile],
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> dict[str, Path]:
    """Find all ``files`` together in one searched folder, or download them.

    Returns a mapping from each file's name to its path. Raises DataNotFound, naming
    every folder searched and how to supply the files, when they are nowhere and
    cannot be downloaded.
    """
    searched = search_dirs(folder, data_dir)
    for directory in searched:
        found = {f.name: find_file(f.name, directory) for f in files}
        if all(found.values()):
            return found  # type: ignore[return-value]

    offline = os.environ.get("DESCEND_OFFLINE", "") not in ("", "0")
    target = cache_dir() / folder
    errors: list[str] = []
    if download and not offline:
        paths = {}
        for f in files:
            existing = find_file(f.name, target)
            try:
                paths[f.name] = existing or fetch(f, target)
            except DataNotFound as exc:
                errors.append(str(exc))
                break
        else:
            return paths

    looked = "\n".join(f"  - {d}" for d in searched)
    names = ", ".join(f.name for f in files)
    reason = (
        "downloading is disabled (download=False or DESCEND_OFFLINE=1)"
        if not download or offline
        else "the download failed: " + "; ".join(errors)
    )
    raise DataNotFound(
        f"data set {folder!r} not found. Looked for {names} in:\n{looked}\n"
        f"and {reason}.\n"
        f"Fix: put the files in one of those folders (for example copy them to {target}), "
        f"pass --data-dir DIR (the folder holding {folder}/), or set DESCEND_DATA=DIR."
    )


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(remote: RemoteFile, directory: Path, timeout: float = 30.0) -> Path:
    """Download ``remote`` into ``directory``, verify its MD5, rename it into place."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.name
    problems = []
    for mirror in remote.mirrors:
        url = mirror.rstrip("/") + "/" + remote.name
        fd, tmp = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            digest = md5sum(Path(tmp))
            if digest != remote.md5:
                raise DataError(f"checksum mismatch for {url}: md5 {digest}, expected {remote.md5}")
            os.replace(tmp, target)
            return target
        except (OSError, urllib.error.URLError, DataError) as exc:
            problems.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataNotFound("; ".join(problems))
