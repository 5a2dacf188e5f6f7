"""Unpacking activity failures inside workflow code: the one place every workflow module uses."""

from __future__ import annotations

import asyncio
from typing import NoReturn

from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError


def failure(error: ActivityError) -> tuple[str, str | None]:
    """Message and ErrorType of an activity failure (the ApplicationError cause when present)."""
    cause: BaseException | None = error.cause
    while isinstance(cause, FailureError) and not isinstance(cause, ApplicationError):
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message, cause.type
    inner = error.cause
    return (str(inner) if inner is not None else str(error)), None


def raise_if_cancelled(error: ActivityError) -> None:
    """An activity that ended because this workflow is being cancelled is not a pod failure."""
    if isinstance(error.cause, CancelledError):
        raise asyncio.CancelledError(str(error)) from error


def fail_with_cause(error: ActivityError) -> NoReturn:
    """End the workflow with the activity's own reason (what the Web UI shows first), not
    "activity task failed"; a cancellation stays a cancellation."""
    raise_if_cancelled(error)
    message, error_type = failure(error)
    raise ApplicationError(message, type=error_type, non_retryable=True) from error
