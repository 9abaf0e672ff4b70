"""Durable, atomic file writes and exclusive output folders.

Why: a SIGKILL, a full disk or a power cut in the middle of a write must never leave a torn
file where a good one was. Every file the project writes (checkpoints, ``model_final.pth``,
strategy state, configs, results) goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder, are fsync'ed, renamed over the target (atomic on POSIX) and the folder
itself is fsync'ed so the rename survives a crash. Readers see the old file or the new one,
never a mix. A failed write removes its temporary file and leaves the old file untouched.

:class:`OutputLock` makes an output folder owned by one process at a time (``fcntl.flock``, which
the kernel releases when the process dies, so a killed run never leaves a stale lock).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import LockError, NASNetError

LOCK_NAME = ".lock"


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a directory so that a rename or a new file in it is durable."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_error(path: str | os.PathLike, err: OSError) -> NASNetError:
    """One clear error for an OSError while writing ``path`` (read-only or full disk, ...)."""
    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded"}.get(
                  err.errno, err.strerror or type(err).__name__)
    return NASNetError(f"cannot write {str(path)!r}: {reason}; free space or choose another output folder "
                       "(files written before are intact)")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path`` durably.

    On an exception the temporary file is removed and ``path`` is left as it was. OSErrors
    (disk full, read-only) are re-raised as one ``NASNetError`` naming ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    except OSError as err:
        raise write_error(target, err) from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(target, err) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


class OutputLock:
    """An exclusive lock on an output folder, held for the life of a run.

    A second process that asks for the same folder gets one ``LockError`` naming the folder and
    the pid that holds it. The kernel drops the lock when the holder exits or is killed.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.folder / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(self.folder / LOCK_NAME, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockError(f"output folder {str(self.folder)!r} is in use by a running {self.what} "
                            f"(pid {holder}); wait for it to finish, or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
