"""Fake activities for workflow tests; they live in `testing.fakes` (shared with benchmarks)."""

from __future__ import annotations

from testing.fakes import FakeWorld, round_files

__all__ = ["FakeWorld", "round_files"]
