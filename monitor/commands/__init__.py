"""The sub-commands of `backup-monitor`, one module each; `monitor.cli` puts them together."""

from __future__ import annotations
