"""aef_lite.fileio: atomic writes, folder locks, and the clean-up of what killed processes left."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aef_lite import fileio
from aef_lite.fileio import (
    FolderLocked,
    atomic_write,
    exclusive_lock,
    folder_lock,
    remove_abandoned_scratch,
    remove_stale_temporaries,
    scratch_dir,
    write_text,
)


def test_folder_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with folder_lock(run) as folder:
        assert folder == run and folder.is_dir()
        if os.name != "nt":
            assert not list(run.iterdir()), "on POSIX the folder itself is locked: no file is added"
        with pytest.raises(FolderLocked, match=f"{run} is in use by another aef-lite process"), folder_lock(run):
            pass
    with folder_lock(run):  # released at the end of the block
        pass


def test_lock_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"), folder_lock(tmp_path / "file"):
        pass
    with pytest.raises(NotADirectoryError, match="cannot create the folder"), folder_lock(tmp_path / "file" / "sub"):
        pass
    lock = tmp_path / "missing" / "x.lock"
    with pytest.raises(FileNotFoundError, match=f"cannot create the lock file {lock}"), exclusive_lock(lock):
        pass
    with exclusive_lock(tmp_path / "x.lock"), pytest.raises(FolderLocked):  # a second holder
        with exclusive_lock(tmp_path / "x.lock", wait=False):
            pass

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "TemporaryFile", read_only)
    with pytest.raises(PermissionError, match=f"cannot write in the folder {tmp_path}"), folder_lock(tmp_path):
        pass


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    def killed_writer(target: str, suffix: str) -> Path:
        """The temporary file that a writer killed inside atomic_write / atomic_path leaves."""
        fd, name = fileio._temporary(tmp_path / target, suffix)
        os.close(fd)
        return Path(name)

    stale = [killed_writer("ckpt_000200.pt", ".tmp"), killed_writer("field.tif", ".tmp.tif")]
    keep = [tmp_path / n for n in ("ckpt_000200.pt", ".hidden.tmp", "notes.tmp", ".x.short.tmp", "history.jsonl")]
    for p in keep:
        p.write_text("user file")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


def test_scratch_dirs_in_use_survive_abandoned_ones_go(tmp_path: Path) -> None:
    long_ago = time.time() - 7200

    def folder(name: str, age: float | None = long_ago) -> Path:
        path = tmp_path / name
        (path / "model").mkdir(parents=True)
        if age is not None:
            os.utime(path, (age, age))
        return path

    abandoned = [folder(".run-dead"), folder(".run-old-style")]
    young, other = folder(".run-young", None), folder("keep-me")
    with scratch_dir(tmp_path, ".run-") as work:
        assert work.is_dir() and work.name.startswith(".run-")
        os.utime(work, (long_ago, long_ago))  # old, but its process is alive and holds it
        assert sorted(remove_abandoned_scratch(tmp_path, ".run-")) == sorted(abandoned)
        assert work.is_dir() and young.is_dir() and other.is_dir()
        assert not any(p.exists() for p in abandoned)
    assert not work.exists()


def test_atomic_writes_replace_or_keep(tmp_path: Path) -> None:
    target = write_text(tmp_path / "a.txt", "one")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_failing_clean_up_does_not_hide_the_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_unlink(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", no_unlink)
    with pytest.raises(OSError, match="disk full"), atomic_write(tmp_path / "a.bin") as fh:
        fh.write(b"x")
        raise OSError(28, "disk full")
