"""Every activity option set bounds the activity and retries with backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.errors import PERMANENT_ERRORS
from workflows import options

OPTION_SETS = {
    "READ_REPO": options.READ_REPO,
    "WRITE_REPO": options.WRITE_REPO,
    "LOAD_POLICY": options.LOAD_POLICY,
    "DEPLOY_POD": options.DEPLOY_POD,
    "POD_HEALTH": options.POD_HEALTH,
    "DELETE_POD": options.DELETE_POD,
    "SWEEP_PODS": options.SWEEP_PODS,
    "FETCH_ARTIFACT": options.FETCH_ARTIFACT,
    "FETCH_PROMPT": options.FETCH_PROMPT,
    "gpu": options.gpu("gpu"),
    "await_pod_healthy": options.await_pod_healthy(timedelta(minutes=60)),
    "generate": options.generate(timedelta(seconds=180)),
}


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_timeouts_and_retry_policy(name: str) -> None:
    """Start-to-close and schedule-to-close are set; permanent errors are never retried."""
    opts = OPTION_SETS[name]
    assert opts.get("start_to_close_timeout") is not None
    assert opts.get("schedule_to_close_timeout") is not None
    assert opts["schedule_to_close_timeout"] >= opts["start_to_close_timeout"]
    policy = opts["retry_policy"]
    assert policy.backoff_coefficient >= 1.0
    assert set(PERMANENT_ERRORS) <= set(policy.non_retryable_error_types or [])


@pytest.mark.parametrize("name", ["await_pod_healthy", "generate", "FETCH_ARTIFACT"])
def test_long_activities_heartbeat(name: str) -> None:
    """Activities that wait on the network heartbeat, so a dead worker is noticed quickly."""
    heartbeat = OPTION_SETS[name].get("heartbeat_timeout")
    assert heartbeat is not None and heartbeat <= timedelta(seconds=30)
