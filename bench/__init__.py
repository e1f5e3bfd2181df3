"""Benchmarks: each module is a script (`python bench/NAME.py`); see docs/benchmarks.md."""
