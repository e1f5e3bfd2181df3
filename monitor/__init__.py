"""backup-job-monitor: one JSON event for every state change of every Azure Backup job."""

from __future__ import annotations

__version__ = "0.1.0"
