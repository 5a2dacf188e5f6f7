"""The Targon GPU provider: serverless containers through Targon's HTTP API.

Owns one `httpx.AsyncClient` with the TARGON_API_KEY bearer and the mapping of Targon's answers
onto `ContainerInfo` and the provider error hierarchy. Endpoints (REFERENCE.md):
`POST /v1/serverless` (create -> `serverless_uid`), `POST /v1/serverless/list`
`{"active_only": true}` (-> `{"resources": [...]}`), `DELETE /v1/serverless/{uid}`; a container
is reached at `https://{uid}.serverless.targon.com`. Targon has no get-by-name: names are
resolved through the list.
"""

from __future__ import annotations

import builtins
import logging
from typing import Any

import httpx

from models.audit import ProviderName
from providers.base import (
    ERROR_BODY_MAX_LENGTH,
    ContainerInfo,
    ContainerState,
    ListedProvider,
    PodEnv,
    ProviderUnavailable,
    env_redacted,
    response_json,
)

logger = logging.getLogger(__name__)

TARGON_BASE_URL = "https://api.targon.com"
TARGON_RESOURCE = "h200-small"  # Targon SKU: 1x H200
URL_TEMPLATE = "https://{uid}.serverless.targon.com"
DEFAULT_PORT = 10006
DEFAULT_CONCURRENCY = 5  # MAX_CONCURRENT_PROMPTS_PER_POD + 1 (upstream)
DEFAULT_TIMEOUT_SECONDS = 30.0  # upstream's SDK session: 30 s in total per call


def _item_uid(item: dict[str, Any]) -> str | None:
    uid = item.get("uid") or item.get("serverless_uid")
    return str(uid) if uid else None


class TargonProvider(ListedProvider):
    """GpuProvider on Targon serverless. Idempotent by name: deploy looks the name up first.

    Owns its HTTP client (closed by `aclose`); does not probe miner health (the activity does).
    """

    name: ProviderName = ProviderName.TARGON
    _noun = "container"

    def __init__(
        self,
        api_key: str,
        base_url: str = TARGON_BASE_URL,
        port: int = DEFAULT_PORT,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        env: PodEnv | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        """Create a client.

        Args:
            api_key: TARGON_API_KEY (sent as a bearer token, never logged).
            base_url: API root, e.g. `https://api.targon.com`.
            port: Port the miner image serves on (GENERATION_PORT).
            transport: Injected in tests (`httpx.MockTransport`).
            timeout: Seconds per control-plane request.
            env: Environment of every deployed container (`providers.base.pod_env`); sent as
                `container.env`, left out when empty (upstream). Never logged.
            concurrency: `container_concurrency` and `target_concurrency` of the scaling block
                (MAX_CONCURRENT_PROMPTS_PER_POD + 1).
        """
        self._port = port
        self._concurrency = concurrency
        self._env = dict(env or {})
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key.strip()}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
        )

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        """Create serverless container `name` running `image`, or return the existing one."""
        existing = await self._find(name)
        if existing:
            logger.info("targon container %s already exists (%s)", name, existing[0].container_id)
            return existing[0]
        container: dict[str, object] = {"image": image}
        if self._env:
            container["env"] = [
                {"name": key, "value": value.get_secret_value()} for key, value in self._env.items()
            ]
        body = {
            "name": name,
            "container": container,
            "resource_name": TARGON_RESOURCE,
            "network": {"port": {"port": self._port}, "visibility": "external"},
            "scaling": {
                "min_replicas": 1,
                "max_replicas": 1,
                "container_concurrency": self._concurrency,
                "target_concurrency": self._concurrency,
            },
        }
        with env_redacted(self._env):
            response = await self._request("POST", "/v1/serverless", f"deploy {name!r}", json=body)
            data = _json_object(response, f"deploy {name!r}")
            uid = data.get("serverless_uid") or data.get("uid")
            if not uid:
                raise ProviderUnavailable(
                    f"targon deploy {name!r}: response has no serverless_uid: "
                    f"{response.text[:ERROR_BODY_MAX_LENGTH]}"
                )
        logger.info("targon container %s created (%s)", name, uid)
        return ContainerInfo(
            name=name,
            provider=ProviderName.TARGON,
            container_id=str(uid),
            state=ContainerState.PENDING,
            url=URL_TEMPLATE.format(uid=uid),
        )

    async def list(self, prefix: str) -> list[ContainerInfo]:
        """Active containers whose name starts with `prefix`, sorted by name.

        As upstream's SDK: an item with a `deleted` key (whatever its value) is skipped; an item
        with a `url` key is reached there (null: not visible yet, PENDING), one without it at
        `https://{uid}.serverless.targon.com`.
        """
        response = await self._request(
            "POST", "/v1/serverless/list", f"list {prefix!r}", json={"active_only": True}
        )
        data = response_json(response, f"targon list {prefix!r}")
        items = data.get("resources") if isinstance(data, dict) else data
        if not isinstance(items, builtins.list):
            raise ProviderUnavailable(
                f"targon list: unexpected response {response.text[:ERROR_BODY_MAX_LENGTH]}"
            )
        result = []
        for item in items:
            if not isinstance(item, dict) or "deleted" in item:
                continue
            uid, item_name = _item_uid(item), item.get("name")
            if uid is None or not isinstance(item_name, str) or not item_name.startswith(prefix):
                continue
            url = item["url"] if "url" in item else URL_TEMPLATE.format(uid=uid)
            url = url.rstrip("/") if isinstance(url, str) and url else None
            result.append(
                ContainerInfo(
                    name=item_name,
                    provider=ProviderName.TARGON,
                    container_id=uid,
                    state=ContainerState.RUNNING if url else ContainerState.PENDING,
                    url=url,
                )
            )
        return sorted(result, key=lambda info: (info.name, info.container_id))

    def auth_headers(self) -> dict[str, str]:
        """Targon's serverless URLs are public (`visibility: external`): no headers."""
        return {}

    def _delete_path(self, container_id: str) -> str:
        return f"/v1/serverless/{container_id}"


def _json_object(response: httpx.Response, action: str) -> dict[str, Any]:
    data = response_json(response, f"targon {action}")
    if not isinstance(data, dict):
        raise ProviderUnavailable(
            f"targon {action}: expected a JSON object: {response.text[:ERROR_BODY_MAX_LENGTH]}"
        )
    return data
