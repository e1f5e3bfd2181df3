"""The sans-io core: value types, parsers, diffing, read budgets and poll planning.

Rule: nothing in this package awaits, sleeps, reads the clock, the environment or the network;
time is always an argument.
"""

from __future__ import annotations
