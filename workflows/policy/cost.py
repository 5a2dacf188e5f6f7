"""What rented pods cost: rental, warm-up, productive and wasted seconds, GPU-seconds, USD. Pure.

Rules (ours; upstream keeps no cost): a pod is rented from the moment `deploy_pod` got it until
its delete answered. Warm-up runs from the deploy until /health first answered 200 (all of the
rental when it never did). Productive seconds are the generation times of its results.
Wasted: the whole rental of a pod that never became healthy or was marked bad; otherwise
warm-up plus idle time (rented - warm-up - productive, at least 0; overlapping generations can
make productive exceed the rest, so idle is clamped). GPU-seconds are rented seconds times the
provider's GPUs per pod; the estimate is GPU-hours times PROVIDER_PRICES[provider] (none
without a price).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from models.audit import AuditCost, AuditPod, AuditPolicy, PodCost, PodRef
from models.competition import PodStats

COST_PATCH = "pod-cost"
"""Marker of pods that report their rental times in pod_finished."""


def rental(pod: PodRef, ended_at: datetime, policy: AuditPolicy) -> PodCost | None:
    """The rental part of a pod's cost (no productive time yet); None if never deployed."""
    if pod.deployed_at is None:
        return None
    rented = max(0.0, (ended_at - pod.deployed_at).total_seconds())
    warmup = rented
    if pod.healthy_at is not None:
        warmup = min(rented, max(0.0, (pod.healthy_at - pod.deployed_at).total_seconds()))
    return _priced(
        PodCost(provider=pod.provider, rented_seconds=rented, warmup_seconds=warmup), policy
    )


def settle(cost: PodCost, productive_seconds: float, bad: bool, policy: AuditPolicy) -> PodCost:
    """`cost` with the pod's productive seconds and its waste (all of it for a bad pod)."""
    idle = max(0.0, cost.rented_seconds - cost.warmup_seconds - productive_seconds)
    wasted = cost.rented_seconds if bad else cost.warmup_seconds + idle
    return _priced(
        cost.model_copy(
            update={"productive_seconds": productive_seconds, "wasted_seconds": wasted}
        ),
        policy,
    )


def of_pods(pods: Iterable[AuditPod]) -> list[PodCost]:
    """Every rental of an audit's pods: each pod's own and its slot's failed attempts."""
    return [c for p in pods for c in ([p.cost] if p.cost else []) + p.failed_attempts]


def total(costs: Iterable[PodCost]) -> AuditCost | None:
    """The sum over an audit's pods; None when no pod reported a cost."""
    found = list(costs)
    if not found:
        return None
    prices = [c.estimated_cost_usd for c in found]
    return AuditCost(
        pods=len(found),
        rented_seconds=round(sum(c.rented_seconds for c in found), 3),
        warmup_seconds=round(sum(c.warmup_seconds for c in found), 3),
        productive_seconds=round(sum(c.productive_seconds for c in found), 3),
        wasted_seconds=round(sum(c.wasted_seconds for c in found), 3),
        gpu_seconds=round(sum(c.gpu_seconds for c in found), 3),
        estimated_cost_usd=(
            None if any(p is None for p in prices) else round(sum(p or 0.0 for p in prices), 4)
        ),
    )


def with_cost(stats: PodStats, cost: PodCost | None) -> PodStats:
    """`stats` plus the cost fields (extra pod_stats.json keys upstream's readers ignore)."""
    if cost is None:
        return stats
    extra = cost.model_dump(mode="json", exclude={"provider"})
    return stats.model_copy(update={"provider": str(cost.provider), **extra})


def _priced(cost: PodCost, policy: AuditPolicy) -> PodCost:
    gpu_seconds = cost.rented_seconds * policy.gpus_per_pod.get(cost.provider, 1)
    price = policy.gpu_hour_prices.get(cost.provider)
    return cost.model_copy(
        update={
            "rented_seconds": round(cost.rented_seconds, 3),
            "warmup_seconds": round(cost.warmup_seconds, 3),
            "productive_seconds": round(cost.productive_seconds, 3),
            "wasted_seconds": round(cost.wasted_seconds, 3),
            "gpu_seconds": round(gpu_seconds, 3),
            "estimated_cost_usd": None if price is None else round(gpu_seconds / 3600 * price, 4),
        }
    )
