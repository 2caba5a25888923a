"""Safe files: atomic writes, folder locks, and the clean-up of what a killed process left.

Every file the package writes goes through :func:`atomic_write` (or :func:`atomic_path`): a
reader never sees a half-written file, and two writers of the same path never share a
temporary file: the content goes to a uniquely named temporary file in the target's folder
(``.<name>.<8 random chars>.tmp[.<suffix>]``, :data:`TEMP_PATTERN`), which is then renamed over
the target (``os.replace``, atomic on POSIX and Windows).

A process that is killed mid-write leaves its temporary file behind. :func:`folder_lock` gives
one process at a time a folder (an advisory lock on ``<folder>/.aef-lite.lock``: ``flock`` on
POSIX, ``msvcrt.locking`` on Windows; the kernel releases it when the process dies), and the
holder may then remove such leftovers with :func:`remove_stale_temporaries`. Work folders made
by :func:`scratch_dir` hold a lock of their own while in use, so :func:`remove_abandoned_scratch`
can tell an abandoned one from one in use.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

LOCK_NAME = ".aef-lite.lock"
"""The lock file :func:`folder_lock` holds inside a folder."""

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
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def _try_lock(fh: BinaryIO, wait: bool) -> bool:
    """Lock the open file ``fh`` exclusively; False if another process holds it (and not ``wait``)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        fh.seek(0)
        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.5)
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _open_lock(path: Path) -> BinaryIO:
    try:
        return open(path, "a+b")  # held open for the lock's lifetime
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the lock file {path} ({err.strerror}); the folder "
                        f"{path.parent} must be writable") from err


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the block.

    ``wait=True`` waits for another holder to finish; ``wait=False`` raises :class:`FolderLocked`
    at once. An unwritable folder raises an ``OSError`` naming the lock file. The lock file is
    left in place (deleting it would race with the next locker).
    """
    path = Path(path)
    fh = _open_lock(path)
    try:
        if not _try_lock(fh, wait):
            raise FolderLocked(f"{path.parent} is in use by another aef-lite process (it holds {path.name}); "
                               "wait for it to finish or use another folder")
        yield
    finally:
        fh.close()  # closing the file releases the lock


@contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock (``<folder>/.aef-lite.lock``) for the block;
    yields the folder. Raises :class:`FolderLocked` at once if another process holds it, and a
    clear ``OSError`` if the folder cannot be created or written (e.g. a file of that name)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the folder {folder} ({err.strerror})") from err
    with exclusive_lock(folder / LOCK_NAME, wait=False):
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
        with exclusive_lock(work / LOCK_NAME, wait=False):
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_abandoned_scratch(root: str | os.PathLike[str], prefix: str, grace_s: float = 3600.0) -> list[Path]:
    """Remove the :func:`scratch_dir` folders under ``root`` whose process is gone; return them.

    A folder counts as abandoned when nobody holds its lock, or, if it has no lock file (its
    process died between creating it and locking it, or it predates the lock), when it is older
    than ``grace_s`` seconds. Folders in use are never touched.
    """
    removed = []
    for work in sorted(Path(root).glob(f"{prefix}*")):
        if not work.is_dir():
            continue
        lock = work / LOCK_NAME
        if not lock.exists():
            if time.time() - work.stat().st_mtime > grace_s:
                shutil.rmtree(work, ignore_errors=True)
                removed.append(work)
            continue
        try:
            with exclusive_lock(lock, wait=False):
                shutil.rmtree(work, ignore_errors=True)
        except FolderLocked:
            continue
        removed.append(work)
    return removed
