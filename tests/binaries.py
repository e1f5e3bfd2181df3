"""Outside programs the tests run for real (Alertmanager, promtool, kubectl), found on PATH.

Without the program a test is skipped with the reason (the Debian package to install), unless
`TESTS_REQUIRE_BINARIES=1` is set (as `.ci/run` does): then it fails, so CI cannot skip it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_ENV", "find_binary", "unavailable"]

REQUIRE_ENV = "TESTS_REQUIRE_BINARIES"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it when the environment requires the binaries."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 forbids skipping this test)")
    pytest.skip(reason)


def find_binary(*names: str, package: str) -> str:
    """The first of `names` on PATH; skips (or fails) the test when there is none, naming the
    Debian `package` that installs it."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    unavailable(f"no {' or '.join(names)} on PATH; install the Debian package {package}")
