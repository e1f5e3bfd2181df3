"""A small tmpfs mounted for one test, filled and freed for real: full-disk tests (Linux, root).

Mounting needs root (or CAP_SYS_ADMIN). Where it is not permitted the tests that need it are
skipped with the reason, unless `TESTS_REQUIRE_TMPFS=1` is set (as `.ci/run`
does): then they fail, so CI cannot skip them silently.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENV = "TESTS_REQUIRE_TMPFS"
PAGE = 4096
"""tmpfs allocates whole pages: a write into the last page of a file needs no free space."""

# linux/fs.h: FS_IOC_GETFLAGS = _IOR('f', 1, long), FS_IOC_SETFLAGS = _IOW('f', 2, long); the
# kernel reads and writes an int through them whatever the size in the request number says.
_LONG = array.array("l").itemsize
_FS_IOC_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
_FS_IOC_SETFLAGS = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
_FS_APPEND_FL = 0x20


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it when the environment requires tmpfs tests."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 forbids skipping this test)")
    pytest.skip(reason)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, *, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: `64k`, `2m`) mounted at `where`, unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or shutil.which("umount") is None:
        unavailable("no mount/umount command to mount a tmpfs")
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        unavailable(f"cannot mount a tmpfs (needs root): {why}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, check=True)


def fill(volume: Path, *, leave_pages: int = 0) -> Path:
    """Fill `volume` with a ballast file until it is full, then free `leave_pages` pages."""
    ballast = volume / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = bytes(PAGE)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        size = os.fstat(fd).st_size
        assert size >= leave_pages * PAGE, f"only {size} bytes of ballast fit"
        os.ftruncate(fd, size - leave_pages * PAGE)
    finally:
        os.close(fd)
    return ballast


def set_append_only(path: Path, on: bool) -> None:
    """Set or clear the file's append-only attribute (`chattr +a`): it can grow, never shrink."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        try:
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
            flags[0] = flags[0] | _FS_APPEND_FL if on else flags[0] & ~_FS_APPEND_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
        except OSError as exc:
            unavailable(f"cannot set the append-only attribute of {path}: {exc}")
    finally:
        os.close(fd)
