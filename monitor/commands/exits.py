"""The process exit codes of every `backup-monitor` command (re-exported by `monitor.cli`)."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""run, emulator, demo: stopped; check-config: fine; list/show: done; wait: the job ended
Completed."""
EXIT_USAGE: Final = 2
"""A bad argument (vault, job or subscription id, operation URL, time window, TLS files, fault
rates) or bad configuration."""
EXIT_STARTUP: Final = 3
"""Startup failed: no credential or token, ARM unreachable, the state file unusable or locked."""
EXIT_API_ERROR: Final = 4
"""An ARM call failed (403, 5xx, transport, refused origin); list: some vault could not be read
(every other vault's jobs were still printed)."""
EXIT_COMPLETED_WITH_WARNINGS: Final = 10
EXIT_FAILED: Final = 11
"""wait: the job ended Failed, or the operation behind the URL failed."""
EXIT_CANCELLED: Final = 12
"""wait: the job ended Cancelled, or the operation was canceled."""
EXIT_TIMED_OUT: Final = 13
"""list: --timeout passed before every vault was read (nothing is printed); wait: --timeout
passed before the job ended."""
EXIT_NOT_FOUND: Final = 14
"""show/wait: the job, its vault or the operation does not exist (ARM answered 404)."""
