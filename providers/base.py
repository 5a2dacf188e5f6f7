"""The one GPU-provider Protocol, its container model and error hierarchy.

Providers never import temporalio: activities/pods.py translates these errors into
`ApplicationError`s with the matching `ErrorType`.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from models.audit import ProviderName

logger = logging.getLogger(__name__)

ERROR_BODY_MAX_LENGTH = 500
CAPACITY_PATTERN = re.compile(
    r"capacity|no longer any instances available|out of stock|insufficient (gpu|resources)",
    re.IGNORECASE,
)
"""An error body saying "no GPU of that kind now" (Targon, Verda, RunPod wordings; REFERENCE.md
sec. 20: not verified against the live APIs)."""


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

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        """`retry_after`: seconds the provider asked us to wait (a 429's Retry-After)."""
        super().__init__(message)
        self.retry_after = retry_after


class ProviderNoCapacity(ProviderUnavailable):
    """The provider has no GPU of the requested kind right now: try another provider.

    Upstream has no capacity detection (it retries any failed deploy on the next provider after
    POD_ACQUISITION_RETRY_INTERVAL); we recognise the answer (`CAPACITY_PATTERN`) so a deploy
    attempt ends at once instead of backing off on the same provider.
    """


class ProviderRejected(ProviderError):
    """Auth, bad image, 4xx: retrying the same request will not help."""


class ContainerNotFound(ProviderError):
    """The named container does not exist (already deleted, or never made)."""


PodEnv = Mapping[str, SecretStr]
"""Environment every pod of a provider gets (HF_TOKEN); values are secrets."""

HF_TOKEN_ENV = "HF_TOKEN"  # noqa: S105 (a variable name, not a secret)


def pod_env(hf_token: SecretStr | None) -> dict[str, SecretStr]:
    """The pod environment from worker settings: HF_TOKEN only when it is non-empty (upstream)."""
    if hf_token is None or not hf_token.get_secret_value():
        return {}
    return {HF_TOKEN_ENV: hf_token}


def redact(text: str, env: PodEnv) -> str:
    """`text` with every pod-environment value replaced by `***` (for error messages)."""
    for value in env.values():
        secret = value.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text


@contextmanager
def env_redacted(env: PodEnv) -> Iterator[None]:
    """Re-raise a ProviderError from the block with pod-environment values masked.

    A provider may echo the request body (and with it HF_TOKEN) in an error answer, and error
    messages end up in workflow histories and logs.
    """
    try:
        yield
    except ProviderError as e:
        safe = redact(str(e), env)
        if safe == str(e):
            raise
        if isinstance(e, ProviderUnavailable):
            raise type(e)(safe, retry_after=e.retry_after) from None
        raise type(e)(safe) from None


@runtime_checkable
class GpuProvider(Protocol):
    """What every provider (targon, verda, local, ...) offers. All calls are idempotent by name.

    Every pod a provider deploys gets the `PodEnv` the provider was constructed with (from the
    worker's settings: HF_TOKEN when non-empty, nothing else). It never travels through a
    workflow or activity payload, and a provider never logs it or puts it in an error message.
    """

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
    if CAPACITY_PATTERN.search(response.text[:ERROR_BODY_MAX_LENGTH]):
        raise ProviderNoCapacity(message)
    if status == 404 and not_found:
        raise ContainerNotFound(message)
    if status == 429 or status >= 500:
        raise ProviderUnavailable(message, retry_after=_retry_after(response))
    raise ProviderRejected(message)


def _retry_after(response: httpx.Response) -> float | None:
    """A Retry-After given in seconds (the HTTP-date form is ignored: Temporal backs off)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def response_json(response: httpx.Response, what: str) -> Any:
    """The JSON body; a body that is not JSON is a (retryable) provider hiccup."""
    try:
        return response.json()
    except ValueError as e:
        raise ProviderUnavailable(
            f"{what}: response is not JSON: {response.text[:ERROR_BODY_MAX_LENGTH]}"
        ) from e


class ListedProvider:
    """`get`, `delete`, requests and `aclose` for providers whose only lookup by name is their
    list (Targon, RunPod): a name may stand for several containers (a retried create), and
    `delete` deletes each. A subclass sets `name`, `_noun`, `_http` and defines `list` and
    `_delete_path`."""

    name: ProviderName
    _noun: str  # what the provider calls a container in messages ("container", "pod")
    _http: httpx.AsyncClient

    async def list(self, prefix: str) -> builtins.list[ContainerInfo]:
        """Containers whose name starts with `prefix`, sorted by name."""
        raise NotImplementedError

    def _delete_path(self, container_id: str) -> str:
        raise NotImplementedError

    async def get(self, name: str) -> ContainerInfo:
        """The container named `name` (listed = active); raises ContainerNotFound."""
        found = await self._find(name)
        if not found:
            raise ContainerNotFound(f"{self.name} {self._noun} {name!r} does not exist")
        return found[0]

    async def delete(self, name: str) -> None:
        """Delete every container named `name` (duplicates too); raises ContainerNotFound."""
        deleted = 0
        for info in await self._find(name):
            try:
                await self._request(
                    "DELETE",
                    self._delete_path(info.container_id),
                    f"delete {name!r}",
                    not_found=True,
                )
                deleted += 1
            except ContainerNotFound:
                logger.info(
                    "%s %s %s (%s) already gone", self.name, self._noun, name, info.container_id
                )
        if not deleted:
            raise ContainerNotFound(f"{self.name} {self._noun} {name!r} does not exist")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def _find(self, name: str) -> builtins.list[ContainerInfo]:
        return [info for info in await self.list(name) if info.name == name]

    async def _request(
        self,
        method: str,
        path: str,
        action: str,
        json: object | None = None,
        not_found: bool = False,
    ) -> httpx.Response:
        """Send one request; map failures onto the provider errors.

        With `not_found`, a 404 means the container is gone (ContainerNotFound); otherwise a 404
        is a rejected request like any other 4xx.
        """
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"{self.name} {action}: network error: {e!r}") from e
        raise_for_status(response, f"{self.name} {action}", not_found=not_found)
        return response
