"""The one GPU-provider Protocol, its container model and error hierarchy.

Providers never import temporalio: activities/pods.py translates these errors into
`ApplicationError`s with the matching `ErrorType`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict

from models.audit import ProviderName

ERROR_BODY_MAX_LENGTH = 500


class ContainerState(StrEnum):
    """Provider-neutral lifecycle state of a container."""

    PENDING = "pending"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class ContainerInfo(BaseModel):
    """A deployed container, as every provider reports it."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: ProviderName
    container_id: str
    state: ContainerState
    url: str | None = None  # base URL of the miner API once known


class ProviderError(Exception):
    """Base of provider failures."""


class ProviderUnavailable(ProviderError):
    """Capacity, rate limit, 5xx or network failure: retrying later may succeed."""


class ProviderRejected(ProviderError):
    """Auth, bad image, 4xx: retrying the same request will not help."""


class ContainerNotFound(ProviderError):
    """The named container does not exist (already deleted, or never made)."""


@runtime_checkable
class GpuProvider(Protocol):
    """What every provider (targon, verda, local, ...) offers. All calls are idempotent by name."""

    name: ProviderName

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        """Create the container `name` running `image`, or return the existing one of that name."""
        ...

    async def get(self, name: str) -> ContainerInfo:
        """Current state of container `name`; raises ContainerNotFound."""
        ...

    async def delete(self, name: str) -> None:
        """Delete container `name`; raises ContainerNotFound if it does not exist."""
        ...

    async def list(self, prefix: str) -> list[ContainerInfo]:
        """Containers whose name starts with `prefix`."""
        ...

    def auth_headers(self) -> dict[str, str]:
        """Headers for calls to the miner API behind this provider (e.g. a bearer token)."""
        ...

    async def aclose(self) -> None:
        """Release HTTP clients / subprocesses."""
        ...


def raise_for_status(response: httpx.Response, what: str, *, not_found: bool = False) -> None:
    """Map a control-API error status to the provider error hierarchy.

    Args:
        response: The provider's answer.
        what: "<provider> <action>" for the message, e.g. "targon deploy 'x'".
        not_found: Whether a 404 means the container does not exist (get/delete).
    """
    status = response.status_code
    if status < 400:
        return
    message = f"{what}: HTTP {status}: {response.text[:ERROR_BODY_MAX_LENGTH]}"
    if status == 404 and not_found:
        raise ContainerNotFound(message)
    if status == 429 or status >= 500:
        raise ProviderUnavailable(message)
    raise ProviderRejected(message)


def response_json(response: httpx.Response, what: str) -> Any:
    """The JSON body; a body that is not JSON is a (retryable) provider hiccup."""
    try:
        return response.json()
    except ValueError as e:
        raise ProviderUnavailable(
            f"{what}: response is not JSON: {response.text[:ERROR_BODY_MAX_LENGTH]}"
        ) from e
