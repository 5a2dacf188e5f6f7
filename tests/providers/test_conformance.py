"""Our provider clients against the fake provider servers: each call's request (path, payload,
headers, container env, port, inference token) is compared with upstream's documented shape
(REFERENCE.md sec. 8, 21), and each fault maps onto the provider error hierarchy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from models.audit import ProviderName
from providers.base import (
    ContainerNotFound,
    GpuProvider,
    ProviderNoCapacity,
    ProviderRejected,
    ProviderUnavailable,
    pod_env,
)
from providers.registry import build_providers
from providers.runpod import RunpodProvider
from providers.targon import TargonProvider
from providers.verda import VerdaProvider
from testing.fake_providers import (
    RUNPOD_API_KEY,
    TARGON_API_KEY,
    VERDA_CLIENT_ID,
    VERDA_CLIENT_SECRET,
    VERDA_GENERATION_TOKEN,
    FakeProviderServer,
    FakeRunpod,
    FakeTargon,
    FakeVerda,
)
from tests.helpers import assert_eventually, make_settings

IMAGE = "local/reference-miner"
HF = "hf_conformance-secret"
PORT = 10006


@pytest.fixture(params=[FakeTargon, FakeVerda, FakeRunpod], ids=lambda c: c.kind.value)
async def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[FakeProviderServer]:
    async with request.param(tmp_path / "pods") as fake:
        yield fake


@pytest.fixture
async def provider(server: FakeProviderServer) -> AsyncIterator[GpuProvider]:
    """The client the worker would build from settings pointing at the fake."""
    settings = make_settings(
        GPU_PROVIDERS=server.kind.value, HF_TOKEN=HF, GENERATION_PORT=PORT, **server.settings()
    )
    client = build_providers(settings)[server.kind]
    yield client
    await client.aclose()


async def _healthy(url: str, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient() as http:

        async def ok() -> bool:
            response = await http.get(f"{url}/health", headers=headers, timeout=2)
            return response.status_code == 200

        await assert_eventually(ok, timeout=20, interval=0.1)


async def test_targon_requests_match_upstream(tmp_path: Path) -> None:
    """Targon: Bearer key + JSON Accept; create body with env, concurrency 5 and port 10006;
    list `{"active_only": true}`; the item's own url; DELETE by uid."""
    async with FakeTargon(tmp_path / "pods") as fake:
        targon = TargonProvider(
            api_key=f" {TARGON_API_KEY}\n",  # stripped, as the SDK does
            base_url=fake.base_url,
            env=pod_env(SecretStr(HF)),
        )
        try:
            await targon.deploy("miner-01-abc-0", IMAGE)
            info = await targon.get("miner-01-abc-0")
            await _healthy(info.url or "", targon.auth_headers())
            await targon.delete("miner-01-abc-0")
        finally:
            await targon.aclose()
        (create,) = fake.calls("POST", "/v1/serverless")[1:2]
        assert create.path == "/v1/serverless"
        assert create.body == {
            "name": "miner-01-abc-0",
            "container": {"image": IMAGE, "env": [{"name": "HF_TOKEN", "value": HF}]},
            "resource_name": "h200-small",
            "network": {"port": {"port": PORT}, "visibility": "external"},
            "scaling": {
                "min_replicas": 1,
                "max_replicas": 1,
                "container_concurrency": 5,
                "target_concurrency": 5,
            },
        }
        for call in fake.requests:
            assert call.headers["authorization"] == f"Bearer {TARGON_API_KEY}"
            assert call.headers["accept"] == "application/json"
        lists = [c for c in fake.requests if c.path == "/v1/serverless/list"]
        assert lists and all(c.method == "POST" for c in lists)
        assert all(c.body == {"active_only": True} for c in lists)
        (uid,) = fake.pods.by_id
        assert info.container_id == uid
        assert info.url == f"{fake.base_url}/pods/{uid}"
        (delete,) = fake.calls("DELETE")
        assert delete.path == f"/v1/serverless/{uid}"
        assert fake.live_names() == []


async def test_verda_requests_match_upstream(tmp_path: Path) -> None:
    """Verda: JSON client-credentials token; create body (spot, concurrency 5, triggers, plain
    env, healthcheck on 10006); every call with the access token; /health needs the inference
    token; DELETE by name."""
    async with FakeVerda(tmp_path / "pods") as fake:
        settings = make_settings(GPU_PROVIDERS="verda", HF_TOKEN=HF, **fake.settings())
        verda = build_providers(settings)[ProviderName.VERDA]
        assert isinstance(verda, VerdaProvider)
        try:
            await verda.deploy("miner-01-abc-0", IMAGE)
            info = await verda.get("miner-01-abc-0")
            assert [i.name for i in await verda.list("miner-01-")] == ["miner-01-abc-0"]
            await _healthy(info.url or "", verda.auth_headers())
            async with httpx.AsyncClient() as http:
                bare = await http.get(f"{info.url}/health")
            assert bare.status_code == 401  # the endpoint wants VERDA_GENERATION_TOKEN
            await verda.delete("miner-01-abc-0")
        finally:
            await verda.aclose()
        token, create = fake.requests[0], fake.requests[2]
        assert (token.method, token.path) == ("POST", "/v1/oauth2/token")
        assert token.body == {
            "grant_type": "client_credentials",
            "client_id": VERDA_CLIENT_ID,
            "client_secret": VERDA_CLIENT_SECRET,
        }
        assert (create.method, create.path) == ("POST", "/v1/container-deployments")
        assert create.body == {
            "name": "miner-01-abc-0",
            "container_registry_settings": {"is_private": False},
            "containers": [
                {
                    "image": IMAGE,
                    "exposed_port": PORT,
                    "healthcheck": {"enabled": True, "port": PORT, "path": "/health"},
                    "env": [
                        {"name": "HF_TOKEN", "value_or_reference_to_secret": HF, "type": "plain"}
                    ],
                }
            ],
            "compute": {"name": "H200", "size": 1},
            "scaling": {
                "min_replica_count": 1,
                "max_replica_count": 1,
                "scale_down_policy": {"delay_seconds": 3600},
                "scale_up_policy": {"delay_seconds": 600},
                "queue_message_ttl_seconds": 600,
                "concurrent_requests_per_replica": 5,
                "scaling_triggers": {
                    "queue_load": {"threshold": 5},
                    "cpu_utilization": {"enabled": False, "threshold": 80},
                    "gpu_utilization": {"enabled": False, "threshold": 80},
                },
            },
            "is_spot": True,
        }
        (access,) = fake.tokens  # one token for the whole session (refreshed before expiry)
        for call in fake.requests[1:]:
            assert call.headers["authorization"] == f"Bearer {access}"
        assert verda.auth_headers() == {"Authorization": f"Bearer {VERDA_GENERATION_TOKEN}"}
        gets = fake.calls("GET")
        assert gets and all(c.path == "/v1/container-deployments" for c in gets)  # list only
        (delete,) = fake.calls("DELETE")
        assert delete.path == "/v1/container-deployments/miner-01-abc-0"


async def test_runpod_requests_match_upstream(tmp_path: Path) -> None:
    """RunPod: Bearer RUNPOD_PROVIDER_API_KEY; create body as upstream's runpod_client (1x H200,
    port 10006/http, env object); list GET /v1/pods; proxy URL from the pod id; DELETE by id."""
    async with FakeRunpod(tmp_path / "pods") as fake:
        settings = make_settings(GPU_PROVIDERS="runpod", HF_TOKEN=HF, **fake.settings())
        runpod = build_providers(settings)[ProviderName.RUNPOD]
        assert isinstance(runpod, RunpodProvider)
        try:
            created = await runpod.deploy("miner-01-abc-0", IMAGE)
            info = await runpod.get("miner-01-abc-0")
            await _healthy(info.url or "", runpod.auth_headers())
            await runpod.delete("miner-01-abc-0")
            with pytest.raises(ContainerNotFound):
                await runpod.delete("miner-01-abc-0")
        finally:
            await runpod.aclose()
        (create,) = fake.calls("POST")
        assert create.path == "/v1/pods"
        assert create.body == {
            "name": "miner-01-abc-0",
            "imageName": IMAGE,
            "gpuTypeIds": ["NVIDIA H200"],
            "gpuCount": 1,
            "containerDiskInGb": 500,
            "volumeInGb": 0,
            "ports": [f"{PORT}/http"],
            "cloudType": "SECURE",
            "supportPublicIp": True,
            "env": {"HF_TOKEN": HF},
        }
        assert all(c.headers["authorization"] == f"Bearer {RUNPOD_API_KEY}" for c in fake.requests)
        assert all(c.path == "/v1/pods" for c in fake.calls("GET"))
        assert created.container_id == info.container_id
        assert info.url == f"{fake.base_url}/pods/{info.container_id}-{PORT}"
        (delete,) = fake.calls("DELETE")
        assert delete.path == f"/v1/pods/{info.container_id}"


def test_runpod_default_url_is_runpods_proxy() -> None:
    """Without RUNPOD_PROXY_URL a pod is reached at `https://{id}-{port}.proxy.runpod.net`."""
    settings = make_settings(GPU_PROVIDERS="runpod", RUNPOD_PROVIDER_API_KEY="k")
    assert settings.runpod_proxy_url.format(pod_id="abc", port=10006) == (
        "https://abc-10006.proxy.runpod.net"
    )


async def test_no_capacity_is_its_own_error(
    server: FakeProviderServer, provider: GpuProvider
) -> None:
    """Each provider's "no GPU now" answer is ProviderNoCapacity, without the HF token."""
    server.faults.no_capacity = True
    with pytest.raises(ProviderNoCapacity) as e:
        await provider.deploy("miner-01-cap-0", IMAGE)
    assert HF not in str(e.value)
    assert server.live_names() == []


async def test_rate_limit_carries_retry_after(
    server: FakeProviderServer, provider: GpuProvider
) -> None:
    """A 429 is ProviderUnavailable with the provider's Retry-After; a 5xx is unavailable."""
    server.faults.rate_limited_calls = 1
    server.faults.retry_after_seconds = 7
    with pytest.raises(ProviderUnavailable) as e:
        await provider.list("miner-")
    assert e.value.retry_after == 7
    server.faults.server_error_calls = 1
    with pytest.raises(ProviderUnavailable) as e5:
        await provider.list("miner-")
    assert "HTTP 500" in str(e5.value) and e5.value.retry_after is None
    assert await provider.list("miner-") == []


async def test_auth_failure_is_rejected_without_secrets(
    server: FakeProviderServer, provider: GpuProvider
) -> None:
    """Bad credentials are ProviderRejected, and no secret appears in the message."""
    server.faults.auth_failure = True
    with pytest.raises(ProviderRejected) as e:
        await provider.list("miner-")
    for secret in server.settings().values():
        if not secret.startswith("http"):
            assert secret not in str(e.value)


async def test_never_healthy_and_dying_pods(
    server: FakeProviderServer, provider: GpuProvider
) -> None:
    """A pod told never to be healthy answers 503 on /health; a killed pod answers 502 while
    its provider still lists it."""
    await provider.deploy("miner-01-sick-0", IMAGE)
    info = await provider.get("miner-01-sick-0")
    await _healthy(info.url or "", provider.auth_headers())
    async with httpx.AsyncClient() as http:
        server.faults.never_healthy = True
        sick = await http.get(f"{info.url}/health", headers=provider.auth_headers())
        assert sick.status_code == 503
        server.faults.never_healthy = False
        await server.kill("miner-01-sick-0")
        dead = await http.get(f"{info.url}/health", headers=provider.auth_headers())
        assert dead.status_code == 502
    assert [i.name for i in await provider.list("miner-01-")] == ["miner-01-sick-0"]
    await provider.delete("miner-01-sick-0")
    assert server.live_names() == []
