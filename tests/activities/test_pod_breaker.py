"""The per-worker provider circuit breaker: deploy_pod against the fake Targon server."""

from __future__ import annotations

from pathlib import Path

import httpx
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.pods import PodActivities
from models.audit import DeployPodInput, ProviderName
from models.errors import ErrorType
from providers.breaker import ProviderBreaker, read_states
from providers.targon import TargonProvider
from testing.fake_providers import TARGON_API_KEY, FakeTargon

TARGON = ProviderName.TARGON


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _deploy(pods: PodActivities, name: str) -> ApplicationError | None:
    try:
        await ActivityEnvironment().run(
            pods.deploy_pod,
            DeployPodInput(name=name, provider=TARGON, image="local/reference-miner"),
        )
    except ApplicationError as e:
        return e
    return None


async def test_repeated_failures_open_the_breaker_then_it_half_opens(tmp_path: Path) -> None:
    """Three failed deploys in a row open the breaker: the fourth fails at once, non-retryable,
    without reaching Targon; after the cooldown one deploy goes through and closes it."""
    clock = Clock()
    breaker = ProviderBreaker(3, 60, clock=clock, state_file=tmp_path / "provider-breaker-w.json")
    async with FakeTargon(tmp_path / "pods") as fake, httpx.AsyncClient() as http:
        targon = TargonProvider(TARGON_API_KEY, base_url=fake.base_url)
        pods = PodActivities({TARGON: targon}, http, breaker=breaker)
        try:
            fake.faults.server_error_calls = 3
            for _ in range(3):
                error = await _deploy(pods, "miner-01-brk-0")
                assert error is not None and error.type == ErrorType.PROVIDER_UNAVAILABLE
                assert not error.non_retryable
            calls = len(fake.requests)
            refused = await _deploy(pods, "miner-01-brk-0")
            assert refused is not None and refused.type == ErrorType.PROVIDER_CIRCUIT_OPEN
            assert refused.non_retryable and "3 failed deploys in a row" in str(refused)
            assert len(fake.requests) == calls  # Targon was not asked
            (state,) = read_states(tmp_path)["provider-breaker-w"]
            assert state.provider is TARGON and state.is_open(clock.now)

            clock.now += 61
            assert await _deploy(pods, "miner-01-brk-0") is None
            assert breaker.states() == [] and fake.live_names() == ["miner-01-brk-0"]
            assert read_states(tmp_path)["provider-breaker-w"] == []
        finally:
            await targon.aclose()


def test_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = ProviderBreaker(2, 60, clock=Clock())
    breaker.failed(TARGON, "boom")
    breaker.succeeded(TARGON)
    breaker.failed(TARGON, "boom")
    assert breaker.refusal(TARGON) is None
    breaker.failed(TARGON, "boom")
    refusal = breaker.refusal(TARGON)
    assert refusal is not None and "targon skipped for 60s" in refusal
    assert breaker.refusal(ProviderName.VERDA) is None


async def test_no_capacity_fails_at_once_and_counts(tmp_path: Path) -> None:
    """No capacity is NO_CAPACITY, non-retryable (the next attempt tries the next provider)."""
    async with FakeTargon(tmp_path / "pods") as fake, httpx.AsyncClient() as http:
        fake.faults.no_capacity = True
        targon = TargonProvider(TARGON_API_KEY, base_url=fake.base_url)
        breaker = ProviderBreaker(5, 60, clock=Clock())
        pods = PodActivities({TARGON: targon}, http, breaker=breaker)
        try:
            error = await _deploy(pods, "miner-01-cap-0")
        finally:
            await targon.aclose()
    assert error is not None and error.type == ErrorType.NO_CAPACITY and error.non_retryable
    assert [s.failures for s in breaker.states()] == [1]
