"""The state-file lock: an exclusive `flock` that lets one process at a time own a state file."""

# Rule: the daemon's store holds the lock on `<file>.lock` from before it opens the database
# until after it has closed it (store.py), so a second daemon on the same file fails to start
# instead of emitting every event again.

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from monitor.errors import StartupError

__all__ = ["StateFileLock"]


class StateFileLock:
    """An exclusive `flock` on `<state file>.lock`: one process at a time owns a state file.

    The kernel drops the lock when its holder ends, however it ends (SIGTERM, SIGKILL, OOM
    kill), so it is never stale and needs no clean-up. The lock file itself stays: deleting it
    would let a process that opened the old file and one that created a new one both hold "the"
    lock. After locking, the holder writes its PID into the file so that the next process can
    name it. The methods do blocking I/O: call them from a worker thread.
    """

    def __init__(self, state_path: Path) -> None:
        self._state_path = Path(state_path)
        self._path = self._state_path.with_name(self._state_path.name + ".lock")
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file, next to the state file."""
        return self._path

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or fail; the state file's directory must exist.

        Raises:
            RuntimeError: this object already holds the lock.
            StartupError: another process holds it (the message names the state file, the
                holder's PID as it wrote it, and the lock file), or the lock file cannot be
                opened, locked or written.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self._path} is already held by this process")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(
                f"cannot open the lock file {self._path} of the state file {self._state_path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise StartupError(
                f"state file {self._state_path} is in use by another backup-monitor "
                f"(pid {holder}; lock {self._path}); stop that process or give this one its "
                "own [state] path"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(
                f"cannot lock {self._path} for the state file {self._state_path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StartupError(
                f"cannot write the lock file {self._path}: {exc.strerror or exc}"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file and drop the lock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # name no PID once the holder has gone
        except OSError:
            pass  # the PID stays behind; the next holder overwrites it
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


def _holder_pid(fd: int) -> str:
    """The PID the holder wrote into the lock file, or "unknown" in the moment between its
    flock and its write (or its release and its exit)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
