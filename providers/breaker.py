"""A circuit breaker per provider, shared by every audit on one worker process.

After `failures` deploys in a row fail on a provider (unavailable, no capacity, rejected), the
provider is skipped for `cooldown` seconds: `deploy_pod` answers at once, without calling it,
so the pod's acquisition moves on to the next provider instead of backing off on a broken one.
After the cooldown one deploy is let through (half-open); its success closes the breaker, its
failure opens it again. Upstream has no breaker (REFERENCE.md sec. 8).

Owns the state of one process and, optionally, a JSON file mirroring it that `starter.py pods
list` prints (one file per worker process). Never imports temporalio.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from atomic import write_atomic
from models.audit import ProviderName

logger = logging.getLogger(__name__)

DEFAULT_FAILURES = 3
DEFAULT_COOLDOWN_SECONDS = 300.0
STATE_GLOB = "provider-breaker-*.json"


class BreakerState(BaseModel):
    """One provider's breaker: consecutive deploy failures and until when it is open."""

    provider: ProviderName
    failures: int = 0
    open_until: float | None = Field(None, description="wall-clock seconds; None: closed")
    last_error: str = ""

    def is_open(self, now: float) -> bool:
        """Open (deploys refused) until `open_until`."""
        return self.open_until is not None and now < self.open_until


class ProviderBreaker:
    """Consecutive-failure breaker per provider (see the module docstring)."""

    def __init__(
        self,
        failures: int = DEFAULT_FAILURES,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        *,
        clock: Callable[[], float] = time.time,
        state_file: Path | None = None,
    ) -> None:
        """Create a closed breaker for every provider.

        Args:
            failures: Deploy failures in a row that open it (PROVIDER_BREAKER_FAILURES).
            cooldown_seconds: How long it stays open (PROVIDER_BREAKER_COOLDOWN).
            clock: Wall-clock seconds (injected in tests).
            state_file: Where to mirror the state for `starter.py pods list` (None: nowhere).
        """
        self._failures = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._file = state_file
        self._states: dict[ProviderName, BreakerState] = {}

    def refusal(self, provider: ProviderName) -> str | None:
        """Why a deploy on `provider` is refused now (open breaker), or None to go ahead."""
        state = self._states.get(provider)
        now = self._clock()
        if state is None or state.open_until is None or now >= state.open_until:
            return None
        return (
            f"{provider} skipped for {state.open_until - now:.0f}s more after {state.failures} "
            f"failed deploys in a row (last: {state.last_error})"
        )

    def failed(self, provider: ProviderName, error: str) -> None:
        """A deploy on `provider` failed with `error` (already free of secrets)."""
        state = self._states.setdefault(provider, BreakerState(provider=provider))
        state.failures += 1
        state.last_error = error[:300]
        if state.failures >= self._failures:
            state.open_until = self._clock() + self._cooldown
            logger.warning(
                "provider %s: %d failed deploys in a row; skipping it for %.0fs (last: %s)",
                provider,
                state.failures,
                self._cooldown,
                state.last_error,
            )
        self._save()

    def succeeded(self, provider: ProviderName) -> None:
        """A deploy on `provider` succeeded: close its breaker."""
        state = self._states.pop(provider, None)
        if state is not None and state.open_until is not None:
            logger.info("provider %s: deploys work again; breaker closed", provider)
        if state is not None:
            self._save()

    def states(self) -> list[BreakerState]:
        """Every provider with failures, by name."""
        return [self._states[name] for name in sorted(self._states)]

    def _save(self) -> None:
        if self._file is None:
            return
        data = [state.model_dump(mode="json") for state in self.states()]
        write_atomic(self._file, json.dumps(data, indent=2).encode())


def breaker_state_file(directory: Path) -> Path:
    """This worker process's state file in `directory` (WORK_DIR)."""
    return directory / STATE_GLOB.replace("*", f"{socket.gethostname()}-{os.getpid()}")


def read_states(directory: Path) -> dict[str, list[BreakerState]]:
    """Breaker state files in `directory` (one per worker process): file stem -> states."""
    found: dict[str, list[BreakerState]] = {}
    for path in sorted(directory.glob(STATE_GLOB)):
        try:
            raw = json.loads(path.read_text())
            found[path.stem] = [BreakerState.model_validate(item) for item in raw]
        except (OSError, ValueError):
            continue
    return found
