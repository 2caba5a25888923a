"""Safe files: atomic writes, folder locks, and the clean-up of what a killed process left.

Every file the package writes goes through :func:`atomic_write` (or :func:`atomic_path`): a
reader never sees a half-written file, and two writers of the same path never share a
temporary file: the content goes to a uniquely named temporary file in the target's folder
(``.<name>.<8 random chars>.tmp[.<suffix>]``, :data:`TEMP_PATTERN`), which is then renamed over
the target (``os.replace``, atomic on POSIX and Windows).

A process that is killed mid-write leaves its temporary file behind. :func:`folder_lock` gives
one process at a time a folder (an advisory lock: ``flock`` on the folder itself on POSIX,
``msvcrt.locking`` of ``<folder>/.aef-lite.lock`` on Windows; the kernel releases it when the
process dies), and the
holder may then remove such leftovers with :func:`remove_stale_temporaries`. Work folders made
by :func:`scratch_dir` hold a lock of their own while in use, so :func:`remove_abandoned_scratch`
can tell an abandoned one from one in use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_NAME = ".aef-lite.lock"
"""The lock file :func:`folder_lock` holds inside a folder on Windows (POSIX locks the folder)."""

TEMP_PATTERN = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?")
"""Names of the temporary files of :func:`atomic_write` / :func:`atomic_path` (``tempfile``'s 8
random characters)."""


class FolderLocked(RuntimeError):
    """Another process holds the lock of a folder (see :func:`folder_lock`)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(path: Path, suffix: str) -> tuple[int, str]:
    """A unique temporary file next to ``path``, readable like a normally created file (mkstemp
    alone makes it private, 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


def _discard(tmp: str | os.PathLike[str]) -> None:
    """Remove a temporary file after a failed write; an error here must not hide the write's."""
    try:
        Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a unique temporary file next to ``path`` for writing; rename it to ``path`` on success.

    On any error (or interrupt) inside the block the temporary file is removed and ``path`` is
    left as it was. ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    fd, tmp = _temporary(path, ".tmp")
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A unique temporary path next to ``path`` for writers that need a file name (e.g. GDAL);
    renamed to ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    fd, tmp = _temporary(path, ".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # the writer may have recreated the file privately
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def read_json(path: str | os.PathLike[str]) -> object:
    """The parsed JSON content of ``path``; a damaged file raises ``ValueError`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def _try_lock(fd: int, wait: bool) -> bool:
    """Lock the open file (or, on POSIX, folder) ``fd`` exclusively; False if another process
    holds it (and not ``wait``)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.5)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _busy(folder: Path) -> FolderLocked:
    return FolderLocked(f"{folder} is in use by another aef-lite process; wait for it to finish or use "
                        "another folder")


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the block.

    ``wait=True`` waits for another holder to finish; ``wait=False`` raises :class:`FolderLocked`
    at once. An unwritable folder raises an ``OSError`` naming the lock file. The lock file is
    left in place (deleting it would race with the next locker).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the lock file {path} ({err.strerror}); the folder "
                        f"{path.parent} must be writable") from err
    try:
        if not _try_lock(fd, wait):
            raise _busy(path.parent)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


@contextmanager
def _held(folder: Path) -> Iterator[None]:
    """Hold the lock of an existing ``folder`` or raise :class:`FolderLocked`: ``flock`` on the
    folder itself on POSIX (no file is added), ``<folder>/.aef-lite.lock`` on Windows."""
    if os.name == "nt":
        with exclusive_lock(folder / LOCK_NAME, wait=False):
            yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if not _try_lock(fd, wait=False):
            raise _busy(folder)
        yield
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``folder`` if needed, check that files can be written in it, and hold its lock for
    the block (see :func:`_held`); yields the folder.

    Raises :class:`FolderLocked` at once if another process holds it, and a clear ``OSError``
    if the folder cannot be created or written (e.g. a file of that name, a read-only parent).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the folder {folder} ({err.strerror})") from err
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise type(err)(err.errno, f"cannot write in the folder {folder} ({err.strerror})") from err
    with _held(folder):
        yield folder


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` / :func:`atomic_path` in ``folder``
    (names matching :data:`TEMP_PATTERN`, nothing else) and return them.

    Call it only while holding the folder's :func:`folder_lock`: a temporary file in a locked
    folder belongs to a writer that was killed.
    """
    stale = [p for p in Path(folder).iterdir() if p.is_file() and TEMP_PATTERN.fullmatch(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def scratch_dir(root: str | os.PathLike[str], prefix: str) -> Iterator[Path]:
    """A new work folder ``<root>/<prefix><random>`` that holds its own lock while the block runs
    and is removed afterwards (also on errors); see :func:`remove_abandoned_scratch`."""
    work = Path(tempfile.mkdtemp(dir=root, prefix=prefix))
    try:
        with _held(work):
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_abandoned_scratch(root: str | os.PathLike[str], prefix: str, grace_s: float = 60.0) -> list[Path]:
    """Remove the :func:`scratch_dir` folders under ``root`` whose process is gone; return them.

    A folder counts as abandoned when nobody holds its lock and it has not changed for
    ``grace_s`` seconds (a new folder is locked by its creator right after it is made). Folders
    in use are never touched.
    """
    removed = []
    for work in sorted(Path(root).glob(f"{prefix}*")):
        if not work.is_dir() or time.time() - work.stat().st_mtime < grace_s:
            continue
        try:
            with _held(work):
                shutil.rmtree(work, ignore_errors=True)
        except FolderLocked:
            continue
        removed.append(work)
    return removed
