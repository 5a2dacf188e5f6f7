"""The RunPod GPU provider: pods through RunPod's REST API (upstream d516814's `runpod_client.py`).

Owns one `httpx.AsyncClient` with the RUNPOD_PROVIDER_API_KEY bearer and the mapping of RunPod's
answers onto `ContainerInfo` and the provider error hierarchy. Endpoints (REFERENCE.md 21.4):
`POST /v1/pods` (create -> `{id, ...}`), `GET /v1/pods` (a list, or one under `pods`/`items`),
`DELETE /v1/pods/{id}`. RunPod returns no URL: a pod is reached through RunPod's HTTP proxy,
`https://{pod_id}-{port}.proxy.runpod.net`, and counts as visible once listed (upstream reads
neither `desiredStatus` nor `runtime`). Names are resolved through the list.
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
    ProviderRejected,
    ProviderUnavailable,
    env_redacted,
    response_json,
)

logger = logging.getLogger(__name__)

RUNPOD_BASE_URL = "https://rest.runpod.io"
PODS_PATH = "/v1/pods"
PROXY_URL_TEMPLATE = "https://{pod_id}-{port}.proxy.runpod.net"
DEFAULT_PORT = 10006
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # upstream
CONTAINER_DISK_GB = 500  # upstream
DEFAULT_GPU_TYPE = "H200"

# Our GPU type -> RunPod's `gpuTypeIds` catalog id (upstream `_RUNPOD_GPU_TYPE_IDS`).
GPU_TYPE_IDS: dict[str, str] = {
    "H200": "NVIDIA H200",  # SXM; the NVL variant is "NVIDIA H200 NVL"
    "H100": "NVIDIA H100 80GB HBM3",  # SXM; PCIe/NVL are other SKUs
    "B200": "NVIDIA B200",
    "RTX6000Pro": "NVIDIA RTX PRO 6000 Blackwell Server Edition",
}


def gpu_type_id(gpu_type: str) -> str:
    """RunPod's catalog id for `gpu_type`; raises ProviderRejected for an unknown type."""
    try:
        return GPU_TYPE_IDS[gpu_type]
    except KeyError:
        known = ", ".join(sorted(GPU_TYPE_IDS))
        message = f"runpod has no gpuTypeId for {gpu_type!r} (known: {known})"
        raise ProviderRejected(message) from None


class RunpodProvider(ListedProvider):
    """GpuProvider on RunPod pods. Idempotent by name: deploy looks the name up first.

    Owns its HTTP client (closed by `aclose`); does not probe miner health (the activity does).
    """

    name: ProviderName = ProviderName.RUNPOD
    _noun = "pod"

    def __init__(
        self,
        api_key: str,
        base_url: str = RUNPOD_BASE_URL,
        port: int = DEFAULT_PORT,
        *,
        gpu_type: str = DEFAULT_GPU_TYPE,
        gpu_count: int = 1,
        proxy_url_template: str = PROXY_URL_TEMPLATE,
        env: PodEnv | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Create a client.

        Args:
            api_key: RUNPOD_PROVIDER_API_KEY (a bearer token, never logged).
            base_url: API root, e.g. `https://rest.runpod.io`.
            port: Port the miner image serves on (GENERATION_PORT), exposed as `{port}/http`.
            gpu_type: A key of `GPU_TYPE_IDS` (RUNPOD_GPU_TYPE).
            gpu_count: GPUs per pod (RUNPOD_GPU_COUNT).
            proxy_url_template: How a pod is reached, with `{pod_id}` and `{port}`
                (RUNPOD_PROXY_URL; fake servers point it at themselves).
            env: Environment of every pod (`providers.base.pod_env`), sent as the `env` object,
                left out when empty (upstream). Never logged.
            transport: Injected in tests (`httpx.MockTransport`).
        """
        self._port = port
        self._gpu_type_id = gpu_type_id(gpu_type)
        self._gpu_count = gpu_count
        self._proxy = proxy_url_template
        self._env = dict(env or {})
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout=DEFAULT_TIMEOUT,
        )

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        """Create pod `name` running `image`, or return the existing one of that name."""
        existing = await self._find(name)
        if existing:
            logger.info("runpod pod %s already exists (%s)", name, existing[0].container_id)
            return existing[0]
        body: dict[str, object] = {
            "name": name,
            "imageName": image,
            "gpuTypeIds": [self._gpu_type_id],
            "gpuCount": self._gpu_count,
            "containerDiskInGb": CONTAINER_DISK_GB,
            "volumeInGb": 0,
            "ports": [f"{self._port}/http"],
            "cloudType": "SECURE",
            "supportPublicIp": True,
        }
        if self._env:
            body["env"] = {key: value.get_secret_value() for key, value in self._env.items()}
        with env_redacted(self._env):
            response = await self._request("POST", PODS_PATH, f"deploy {name!r}", json=body)
            data = response_json(response, f"runpod deploy {name!r}")
            pod_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(pod_id, str) or not pod_id:
                raise ProviderUnavailable(
                    f"runpod deploy {name!r}: response has no id: "
                    f"{response.text[:ERROR_BODY_MAX_LENGTH]}"
                )
        logger.info("runpod pod %s created (%s)", name, pod_id)
        return self._info(pod_id, name)

    async def list(self, prefix: str) -> list[ContainerInfo]:
        """Pods whose name starts with `prefix`, sorted by name."""
        response = await self._request("GET", PODS_PATH, f"list {prefix!r}")
        data = response_json(response, f"runpod list {prefix!r}")
        if isinstance(data, dict):
            data = data.get("pods", data.get("items"))
        if not isinstance(data, builtins.list):
            raise ProviderUnavailable(
                f"runpod list: unexpected response {response.text[:ERROR_BODY_MAX_LENGTH]}"
            )
        found = [
            self._info(str(item["id"]), item["name"])
            for item in data
            if _is_pod(item) and item["name"].startswith(prefix)
        ]
        return sorted(found, key=lambda info: (info.name, info.container_id))

    def auth_headers(self) -> dict[str, str]:
        """RunPod's HTTP proxy is public: no headers."""
        return {}

    def _info(self, pod_id: str, name: str) -> ContainerInfo:
        return ContainerInfo(
            name=name,
            provider=ProviderName.RUNPOD,
            container_id=pod_id,
            state=ContainerState.RUNNING,
            url=self._proxy.format(pod_id=pod_id, port=self._port),
        )

    def _delete_path(self, container_id: str) -> str:
        return f"{PODS_PATH}/{container_id}"


def _is_pod(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("id"), str)
        and bool(item["id"])
    )
