"""A "policy" module that reads the clock: what the sandbox must catch (test_sandbox.py)."""

from __future__ import annotations

from datetime import UTC, datetime


def deadline_passed() -> bool:
    """Non-deterministic on purpose: policy code must take `now` as an argument instead."""
    return datetime.now(UTC).year > 2000
