"""Discord-compatible webhook notices (upstream's `discord.py`, REFERENCE sec. 17), as an activity.

Workflows decide when to notify (audit result, progress, all initial pods failed warm-up, pod
marked bad, pod failed to deploy); this activity only POSTs `{"embeds": [{title, color,
timestamp, description}]}` to DISCORD_WEBHOOK_URL. Because the send is an activity, a restart
of the worker or the workflow replays the recorded result and never sends the notice again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.audit import NotifyInput
from models.errors import ErrorType

logger = logging.getLogger(__name__)

NOTIFY_TIMEOUT_SECONDS = 10.0
"""Upstream's timeout of one webhook POST."""


def embed_payload(input: NotifyInput, timestamp: str) -> dict[str, Any]:
    """The Discord webhook body of one notice."""
    return {
        "embeds": [
            {
                "title": input.title,
                "color": input.color,
                "timestamp": timestamp,
                "description": input.description,
            }
        ]
    }


class NotifyActivities:
    """Owns the webhook URL (a secret: injected here, never in a workflow input) and uses the
    worker's HTTP client; does not own when or what to notify (the workflows do)."""

    def __init__(self, webhook_url: str | None, http: httpx.AsyncClient) -> None:
        """No URL: `notify` does nothing (upstream's null notifier)."""
        self._url = webhook_url
        self._http = http

    @activity.defn(name="notify")
    async def notify(self, input: NotifyInput) -> None:
        """POST one notice. The timestamp is the activity's scheduled time, so a retry sends the
        same body. A 4xx is permanent (`NotifyRejected`); network errors and 5xx are retried a
        few times by the caller's policy (options.NOTIFY)."""
        if self._url is None:
            return
        timestamp = activity.info().scheduled_time.isoformat()
        try:
            response = await self._http.post(
                self._url, json=embed_payload(input, timestamp), timeout=NOTIFY_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as e:
            raise ApplicationError(f"webhook unreachable: {e}") from e
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise ApplicationError(
                f"webhook refused the notice: HTTP {response.status_code} {response.text[:200]}",
                type=ErrorType.NOTIFY_REJECTED,
                non_retryable=True,
            )
        if response.status_code >= 300:
            raise ApplicationError(f"webhook answered HTTP {response.status_code}")

    def activities(self) -> list[Callable[..., Any]]:
        """Bound activities for worker registration."""
        return [self.notify]
