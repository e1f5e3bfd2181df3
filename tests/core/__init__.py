"""Tests of the sans-io core."""
