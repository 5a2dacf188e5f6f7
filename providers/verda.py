"""The Verda GPU provider: container deployments through Verda's HTTP API.

Owns one `httpx.AsyncClient`, the OAuth2 client-credentials token (cached until shortly before
it expires, refreshed once on a 401) and the mapping of Verda's answers onto `ContainerInfo` and
the provider error hierarchy. Endpoints: `POST /v1/oauth2/token`, `POST /v1/container-deployments`,
`DELETE /v1/container-deployments/{name}`, `GET /v1/container-deployments` (list; upstream finds
a deployment there by name, never by `GET .../{name}`). Calls to
the miner behind a deployment carry a separate bearer (VERDA_GENERATION_TOKEN, `auth_headers`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from models.audit import ProviderName
from providers.base import (
    ERROR_BODY_MAX_LENGTH,
    ContainerInfo,
    ContainerNotFound,
    ContainerState,
    PodEnv,
    ProviderRejected,
    ProviderUnavailable,
    env_redacted,
    raise_for_status,
    response_json,
)

logger = logging.getLogger(__name__)

VERDA_BASE_URL = "https://api.verda.com"
OAUTH_PATH = "/v1/oauth2/token"
DEPLOYMENTS_PATH = "/v1/container-deployments"
COMPUTE = {"name": "H200", "size": 1}
DEFAULT_PORT = 10006
DEFAULT_CONCURRENCY = 5  # MAX_CONCURRENT_PROMPTS_PER_POD + 1 (upstream)
DEFAULT_TIMEOUT_SECONDS = 60.0
TOKEN_REFRESH_MARGIN_SECONDS = 60.0  # refresh this long before the token expires
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0  # when the token answer has no expires_in

# Verda deployment status -> provider-neutral state; unknown values count as PENDING (the
# health probe and the warm-up timeout decide), never as healthy.
STATUS_STATES: dict[str, ContainerState] = {
    "healthy": ContainerState.RUNNING,
    "running": ContainerState.RUNNING,
    "initializing": ContainerState.PENDING,
    "provisioning": ContainerState.PENDING,
    "pending": ContainerState.PENDING,
    "deploying": ContainerState.PENDING,
    "scaling": ContainerState.PENDING,
    "unhealthy": ContainerState.PENDING,
    "failed": ContainerState.FAILED,
    "error": ContainerState.FAILED,
    "paused": ContainerState.STOPPED,
    "stopped": ContainerState.STOPPED,
    "deleting": ContainerState.STOPPED,
    "deleted": ContainerState.STOPPED,
    "terminated": ContainerState.STOPPED,
}


class VerdaCredentials(BaseModel):
    """Verda secrets: the OAuth2 client credentials and the bearer for miner calls."""

    model_config = ConfigDict(frozen=True)

    client_id: str  # VERDA_CLIENT_ID
    client_secret: SecretStr  # VERDA_CLIENT_SECRET
    generation_token: SecretStr  # VERDA_GENERATION_TOKEN


def _state(status: object) -> ContainerState:
    if isinstance(status, dict):
        status = status.get("status") or status.get("state")
    if not isinstance(status, str):
        return ContainerState.PENDING
    return STATUS_STATES.get(status.strip().lower(), ContainerState.PENDING)


class VerdaProvider:
    """GpuProvider on Verda container deployments; the deployment name is its id.

    Owns its HTTP client (closed by `aclose`) and the access token; does not probe miner health.
    """

    name: ProviderName = ProviderName.VERDA

    def __init__(
        self,
        credentials: VerdaCredentials,
        base_url: str = VERDA_BASE_URL,
        port: int = DEFAULT_PORT,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        env: PodEnv | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        """Create a client.

        Args:
            credentials: Client credentials and the miner-call bearer (never logged).
            base_url: API root, e.g. `https://api.verda.com`.
            port: Port the miner image serves on (GENERATION_PORT).
            transport: Injected in tests (`httpx.MockTransport`).
            clock: Monotonic seconds, for token expiry (injected in tests).
            env: Environment of every deployed container (`providers.base.pod_env`); sent as
                plain `env` entries of the container, left out when empty. Never logged.
            concurrency: `concurrent_requests_per_replica` and the queue-load threshold
                (MAX_CONCURRENT_PROMPTS_PER_POD + 1).
        """
        self._concurrency = concurrency
        self._credentials = credentials
        self._env = dict(env or {})
        self._port = port
        self._clock = clock
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=DEFAULT_TIMEOUT_SECONDS
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        """Create deployment `name` running `image`, or return the existing one of that name."""
        try:
            existing = await self.get(name)
        except ContainerNotFound:
            pass
        else:
            logger.info("verda deployment %s already exists", name)
            return existing
        container: dict[str, object] = {
            "image": image,
            "exposed_port": self._port,
            "healthcheck": {"enabled": True, "port": self._port, "path": "/health"},
        }
        if self._env:
            container["env"] = [
                {
                    "name": key,
                    "value_or_reference_to_secret": value.get_secret_value(),
                    "type": "plain",
                }
                for key, value in self._env.items()
            ]
        body = {
            "name": name,
            "container_registry_settings": {"is_private": False},
            "containers": [container],
            "compute": dict(COMPUTE),
            "is_spot": True,  # upstream rents spot H200s
            "scaling": {
                "min_replica_count": 1,
                "max_replica_count": 1,
                "scale_down_policy": {"delay_seconds": 3600},
                "scale_up_policy": {"delay_seconds": 600},
                "queue_message_ttl_seconds": 600,
                "concurrent_requests_per_replica": self._concurrency,
                "scaling_triggers": {
                    "queue_load": {"threshold": self._concurrency},
                    "cpu_utilization": {"enabled": False, "threshold": 80},
                    "gpu_utilization": {"enabled": False, "threshold": 80},
                },
            },
        }
        with env_redacted(self._env):
            response = await self._request(
                "POST", DEPLOYMENTS_PATH, f"deploy {name!r}", json=body, conflict_ok=True
            )
            if response.status_code == 409:  # created concurrently by an earlier attempt
                return await self.get(name)
            data = response_json(response, f"verda deploy {name!r}")
        logger.info("verda deployment %s created", name)
        return self._info(data if isinstance(data, dict) else {}, name)

    async def get(self, name: str) -> ContainerInfo:
        """Deployment `name` from the list, as upstream finds it (visible once it has an
        `endpoint_base_url`); raises ContainerNotFound."""
        found = [info for info in await self.list(name) if info.name == name]
        if not found:
            raise ContainerNotFound(f"verda deployment {name!r} does not exist")
        return found[0]

    async def delete(self, name: str) -> None:
        """Delete deployment `name`; raises ContainerNotFound if there is none."""
        await self._request(
            "DELETE", f"{DEPLOYMENTS_PATH}/{name}", f"delete {name!r}", not_found=True
        )
        logger.info("verda deployment %s deleted", name)

    async def list(self, prefix: str) -> list[ContainerInfo]:
        """Deployments whose name starts with `prefix`, sorted by name."""
        response = await self._request("GET", DEPLOYMENTS_PATH, f"list {prefix!r}")
        data = response_json(response, f"verda list {prefix!r}")
        if isinstance(data, dict):
            data = data.get("deployments", data.get("items", data.get("data")))
        if not isinstance(data, builtins.list):
            raise ProviderUnavailable(
                f"verda list: unexpected response {response.text[:ERROR_BODY_MAX_LENGTH]}"
            )
        found = [
            self._info(item, item["name"])
            for item in data
            if isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and item["name"].startswith(prefix)
        ]
        return sorted(found, key=lambda info: info.name)

    def auth_headers(self) -> dict[str, str]:
        """Bearer VERDA_GENERATION_TOKEN: Verda's endpoint rejects miner calls without it."""
        token = self._credentials.generation_token.get_secret_value()
        return {"Authorization": f"Bearer {token}"}

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _info(self, data: dict[str, Any], name: str) -> ContainerInfo:
        url = data.get("endpoint_base_url")
        return ContainerInfo(
            name=str(data.get("name") or name),
            provider=ProviderName.VERDA,
            container_id=str(data.get("name") or name),
            state=_state(data.get("status")),
            url=url.rstrip("/") if isinstance(url, str) and url else None,
        )

    async def _access_token(self, stale: str | None = None) -> str:
        """A valid access token; `stale` (one the API just refused) is never returned again."""
        async with self._token_lock:
            cached = self._token
            if cached is not None and cached != stale and self._clock() < self._token_expires_at:
                return cached
            body = {
                "grant_type": "client_credentials",
                "client_id": self._credentials.client_id,
                "client_secret": self._credentials.client_secret.get_secret_value(),
            }
            try:
                response = await self._http.post(OAUTH_PATH, json=body)
            except httpx.HTTPError as e:
                raise ProviderUnavailable(f"verda token: network error: {e!r}") from e
            if response.status_code in (400, 401, 403):
                raise ProviderRejected(
                    f"verda token: HTTP {response.status_code} (check VERDA_CLIENT_ID / "
                    f"VERDA_CLIENT_SECRET): {response.text[:ERROR_BODY_MAX_LENGTH]}"
                )
            raise_for_status(response, "verda token", not_found=False)
            data = response_json(response, "verda token")
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise ProviderUnavailable(
                    f"verda token: no access_token in {response.text[:ERROR_BODY_MAX_LENGTH]}"
                )
            lifetime = data.get("expires_in", DEFAULT_TOKEN_LIFETIME_SECONDS)
            if not isinstance(lifetime, int | float):
                lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
            self._token = token
            margin = min(TOKEN_REFRESH_MARGIN_SECONDS, float(lifetime) / 2)
            self._token_expires_at = self._clock() + float(lifetime) - margin
            logger.debug("verda access token obtained, valid for %ss", lifetime)
            return token

    async def _request(
        self,
        method: str,
        path: str,
        action: str,
        json: object | None = None,
        not_found: bool = False,
        conflict_ok: bool = False,
    ) -> httpx.Response:
        """Send one authenticated request (one token refresh on 401); map failures.

        With `not_found`, a 404 means the deployment does not exist (ContainerNotFound);
        otherwise it is a rejected request like any other 4xx. With `conflict_ok`, a 409 is
        returned to the caller instead of raising.
        """
        token = await self._access_token()
        response = await self._send(method, path, action, json, token)
        if response.status_code == 401:  # token revoked or expired early: refresh once
            token = await self._access_token(stale=token)
            response = await self._send(method, path, action, json, token)
        if not (conflict_ok and response.status_code == 409):
            raise_for_status(response, f"verda {action}", not_found=not_found)
        return response

    async def _send(
        self, method: str, path: str, action: str, json: object | None, token: str
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, path, json=json, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"verda {action}: network error: {e!r}") from e
