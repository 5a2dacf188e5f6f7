"""Activity options (timeouts, retry policies, queues): the one place they are set.

Every activity has a start-to-close and a schedule-to-close timeout; long ones heartbeat.
Permanent error types (bad input, model failures) are never retried by Temporal; provider and
HTTP hiccups are retried with exponential backoff.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy

from models.errors import PERMANENT_ERRORS


class ActivityOptions(TypedDict, total=False):
    """Keyword options of `workflow.execute_activity`, spread at call sites."""

    task_queue: str
    start_to_close_timeout: timedelta
    schedule_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    retry_policy: RetryPolicy


BACKOFF = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=PERMANENT_ERRORS,
)

READ_REPO = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=2),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=BACKOFF,
)
WRITE_REPO = ActivityOptions(
    # Heartbeats: a commit lost with a killed worker is retried in seconds, not minutes (the
    # audit's loop and its final write wait for it).
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=BACKOFF,
)
PUBLISH_REPORT = ActivityOptions(
    # A convenience for operators: a few tries, then the audit ends without a report link
    # (`starter.py report` builds the same page at any time).
    start_to_close_timeout=timedelta(minutes=2),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=5)),
)
NOTIFY = ActivityOptions(
    # A notice is best effort (upstream logs and ignores errors): a few tries, never a wait
    # that holds up the audit.
    start_to_close_timeout=timedelta(seconds=15),
    schedule_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=2)),
)
LOAD_POLICY = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=BACKOFF,
)
DEPLOY_POD = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=2),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=BACKOFF,
)
FETCH_PROMPT = ActivityOptions(
    # Retried for as long as an outage of the prompt server may reasonably last: a prompt we
    # cannot fetch is our problem, never a failed generation charged to the miner. Heartbeats:
    # a fetch whose completion was lost (worker or server killed) is retried in seconds.
    start_to_close_timeout=timedelta(minutes=2),
    heartbeat_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(hours=2),
    retry_policy=BACKOFF,
)
POD_HEALTH = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=2),
    retry_policy=BACKOFF,
)
DELETE_POD = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=2),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=BACKOFF,
)
SWEEP_PODS = DELETE_POD
FETCH_ARTIFACT = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=BACKOFF,
)
POLL_GITHUB = ActivityOptions(
    # A few pages of 30 s requests; 5xx and network errors back off (durably) and the tracker
    # polls again on its next tick if they persist.
    start_to_close_timeout=timedelta(minutes=3),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=BACKOFF,
)
DESCRIBE_WORKFLOWS = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=BACKOFF,
)


def gpu(task_queue: str, outage_limit: timedelta = timedelta(hours=1)) -> ActivityOptions:
    """Render / score on the GPU workers' queue (the policy names it, default `gpu`).

    No schedule-to-start limit: with the GPU workers down the call waits in the queue, and
    retryable failures back off, until `outage_limit` (SERVICE_OUTAGE_LIMIT) - an outage of
    ours is waited out, never turned into a failed prompt.
    """
    return ActivityOptions(
        task_queue=task_queue,
        start_to_close_timeout=timedelta(minutes=5),
        heartbeat_timeout=timedelta(seconds=10),  # a lost completion is retried in seconds
        schedule_to_close_timeout=outage_limit,
        retry_policy=BACKOFF,
    )


def our_service(base: ActivityOptions, outage_limit: timedelta) -> ActivityOptions:
    """`base` retried (backing off) for as long as an outage of ours may last."""
    return ActivityOptions(**{**base, "schedule_to_close_timeout": outage_limit})


def await_pod_healthy(warmup: timedelta) -> ActivityOptions:
    """A heartbeating poll that may run for the whole warm-up window."""
    return ActivityOptions(
        start_to_close_timeout=warmup + timedelta(minutes=1),
        schedule_to_close_timeout=(warmup + timedelta(minutes=1)) * 3,
        heartbeat_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=3,
            non_retryable_error_types=PERMANENT_ERRORS,
        ),
    )


def generate(timeout: timedelta, heartbeat: timedelta = timedelta(seconds=20)) -> ActivityOptions:
    """One miner call: heartbeats while waiting; infrastructure failures retried a few times.

    The heartbeat timeout is how soon a generation on a dead worker is retried elsewhere.
    """
    return ActivityOptions(
        start_to_close_timeout=timeout + timedelta(minutes=2),
        schedule_to_close_timeout=(timeout + timedelta(minutes=2)) * 3,
        heartbeat_timeout=heartbeat,
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=5,
            non_retryable_error_types=PERMANENT_ERRORS,
        ),
    )


# --- v2 (upstream acquisition and timing) ---------------------------------------------------------

DEPLOY_POD_ATTEMPT = ActivityOptions(
    # One acquisition attempt: provider hiccups are retried briefly here; a longer shortage is a
    # failed attempt that the pod workflow retries after POD_ACQUISITION_RETRY_INTERVAL.
    start_to_close_timeout=timedelta(minutes=2),
    schedule_to_close_timeout=timedelta(minutes=5),
    retry_policy=BACKOFF,
)


def generate_v2(
    timeout: timedelta, download: timedelta, heartbeat: timedelta = timedelta(seconds=20)
) -> ActivityOptions:
    """One miner call as upstream times it: no overall deadline below timeout + download.

    A generation slower than `timeout` keeps its real time; only silence past the read timeout
    (timeout + download, per socket read) fails it. The bounds here only catch a runaway call.
    """
    limit = (timeout + download) * 2 + timedelta(minutes=2)
    return ActivityOptions(
        start_to_close_timeout=limit,
        schedule_to_close_timeout=limit * 3,
        heartbeat_timeout=heartbeat,
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=5,
            non_retryable_error_types=PERMANENT_ERRORS,
        ),
    )
