"""Tests of the emulator."""

from __future__ import annotations
