"""workflows/policy/cost.py: rental, warm-up, productive and wasted seconds, GPU-seconds, USD."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.audit import AuditPolicy, PodRef, ProviderName
from models.competition import PodStats
from workflows.policy import cost

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = AuditPolicy(
    gpu_hour_prices={ProviderName.RUNPOD: 3.6},
    gpus_per_pod={ProviderName.RUNPOD: 2},
)


def pod(healthy_after: float | None, provider: ProviderName = ProviderName.RUNPOD) -> PodRef:
    healthy = None if healthy_after is None else T0 + timedelta(seconds=healthy_after)
    return PodRef(name="miner-01-x-0", provider=provider, deployed_at=T0, healthy_at=healthy)


def test_a_healthy_pod_wastes_its_warmup_and_idle_time() -> None:
    """1000 s rented, 100 s warm-up, 600 s generating: 300 s idle, 400 s wasted; 2 GPUs at
    3.6 USD per GPU-hour make 2000 GPU-s and 2 USD."""
    rental = cost.rental(pod(100), T0 + timedelta(seconds=1000), POLICY)
    assert rental is not None
    settled = cost.settle(rental, productive_seconds=600, bad=False, policy=POLICY)
    assert (settled.rented_seconds, settled.warmup_seconds) == (1000, 100)
    assert (settled.productive_seconds, settled.wasted_seconds) == (600, 400)
    assert (settled.gpu_seconds, settled.estimated_cost_usd) == (2000, 2.0)


def test_bad_and_never_healthy_pods_waste_everything() -> None:
    """A bad pod's whole rental is waste; a never-healthy one warms up all its life."""
    rental = cost.rental(pod(None), T0 + timedelta(seconds=50), POLICY)
    assert rental is not None and rental.warmup_seconds == 50
    assert cost.settle(rental, 0, bad=True, policy=POLICY).wasted_seconds == 50
    healthy = cost.rental(pod(10), T0 + timedelta(seconds=50), POLICY)
    assert healthy is not None
    assert cost.settle(healthy, 30, bad=True, policy=POLICY).wasted_seconds == 50


def test_totals_and_unpriced_providers() -> None:
    """Without a price the estimate is None (also in the total); never deployed: no cost."""
    end = T0 + timedelta(seconds=10)
    unpriced = cost.rental(pod(1, ProviderName.TARGON), end, POLICY)
    priced = cost.rental(pod(1), end, POLICY)
    assert unpriced is not None and priced is not None
    assert unpriced.estimated_cost_usd is None and unpriced.gpu_seconds == 10
    total = cost.total([unpriced, priced])
    assert total is not None and total.pods == 2 and total.gpu_seconds == 30
    assert total.estimated_cost_usd is None
    assert cost.total([]) is None
    assert cost.rental(PodRef(name="p", provider=ProviderName.TARGON), end, POLICY) is None
    stats = cost.with_cost(PodStats(pod_id="p"), priced)
    assert stats.model_dump(mode="json")["provider"] == "runpod"
    assert cost.with_cost(PodStats(pod_id="p"), None) == PodStats(pod_id="p")
