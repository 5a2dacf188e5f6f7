"""TargonProvider against an in-memory fake of Targon's serverless API (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from models.audit import ProviderName
from providers.base import (
    ERROR_BODY_MAX_LENGTH,
    ContainerNotFound,
    ContainerState,
    GpuProvider,
    ProviderRejected,
    ProviderUnavailable,
    pod_env,
)
from providers.targon import TargonProvider

BASE = "https://targon.test"
KEY = "targon-secret"


class FakeTargon:
    """Serverless containers in a dict; records every request; can be told to fail."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.fail_with: httpx.Response | None = None
        self.fail_delete_with: int | None = None
        self.create_answer: httpx.Response | None = None
        self.next_uid = 0

    def calls(self, method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {KEY}"
        if self.fail_with is not None:
            return self.fail_with
        path = request.url.path
        if request.method == "POST" and path == "/v1/serverless/list":
            assert json.loads(request.content) == {"active_only": True}
            return httpx.Response(200, json={"resources": list(self.containers.values())})
        if request.method == "POST" and path == "/v1/serverless":
            if self.create_answer is not None:
                return self.create_answer
            body = json.loads(request.content)
            self.next_uid += 1
            uid = f"uid{self.next_uid}"
            self.containers[uid] = {"uid": uid, "name": body["name"], "cost_per_hour": 4.2}
            return httpx.Response(200, json={"serverless_uid": uid, "name": body["name"]})
        if request.method == "DELETE" and path.startswith("/v1/serverless/"):
            if self.fail_delete_with is not None:
                return httpx.Response(self.fail_delete_with, json={"error": "nope"})
            uid = path.rsplit("/", 1)[1]
            if self.containers.pop(uid, None) is None:
                return httpx.Response(404, json={"error": "not found"})
            return httpx.Response(200, json={"deleted": uid})
        return httpx.Response(405)


@pytest.fixture
def fake() -> FakeTargon:
    return FakeTargon()


@pytest.fixture
async def targon(fake: FakeTargon) -> AsyncIterator[TargonProvider]:
    provider = TargonProvider(
        api_key=KEY, base_url=BASE, port=10006, transport=httpx.MockTransport(fake.handler)
    )
    yield provider
    await provider.aclose()


async def test_deploy_sends_the_reference_body(targon: TargonProvider, fake: FakeTargon) -> None:
    """deploy posts the documented body and returns a PENDING container with its URL."""
    assert isinstance(targon, GpuProvider)
    info = await targon.deploy("miner-01-abc-0-0", "registry/img:tag")
    (post,) = [r for r in fake.calls("POST") if r.url.path == "/v1/serverless"]
    assert str(post.url) == f"{BASE}/v1/serverless"
    assert json.loads(post.content) == {
        "name": "miner-01-abc-0-0",
        "container": {"image": "registry/img:tag"},  # no HF_TOKEN: `env` left out (upstream)
        "resource_name": "h200-small",
        "network": {"port": {"port": 10006}, "visibility": "external"},
        "scaling": {
            "min_replicas": 1,
            "max_replicas": 1,
            "container_concurrency": 5,  # MAX_CONCURRENT_PROMPTS_PER_POD + 1 (upstream)
            "target_concurrency": 5,
        },
    }
    assert info.provider is ProviderName.TARGON
    assert info.container_id == "uid1"
    assert info.state is ContainerState.PENDING
    assert info.url == "https://uid1.serverless.targon.com"


HF_TOKEN = "hf_secretvalue123"


@pytest.fixture
async def targon_with_token(fake: FakeTargon) -> AsyncIterator[TargonProvider]:
    provider = TargonProvider(
        api_key=KEY,
        base_url=BASE,
        transport=httpx.MockTransport(fake.handler),
        env=pod_env(SecretStr(HF_TOKEN)),
    )
    yield provider
    await provider.aclose()


async def test_deploy_sends_hf_token_in_container_env(
    targon_with_token: TargonProvider, fake: FakeTargon
) -> None:
    """With HF_TOKEN set, the container carries `env: [{name: HF_TOKEN, value}]` and no more."""
    await targon_with_token.deploy("pod-h", "registry/img:tag")
    (post,) = [r for r in fake.calls("POST") if r.url.path == "/v1/serverless"]
    assert json.loads(post.content)["container"] == {
        "image": "registry/img:tag",
        "env": [{"name": "HF_TOKEN", "value": HF_TOKEN}],
    }


def test_empty_hf_token_means_no_env() -> None:
    """An empty (or unset) HF_TOKEN gives pods no environment at all."""
    assert pod_env(SecretStr("")) == {}
    assert pod_env(None) == {}
    assert pod_env(SecretStr("t")) == {"HF_TOKEN": SecretStr("t")}


async def test_deploy_error_never_carries_the_hf_token(
    targon_with_token: TargonProvider, fake: FakeTargon
) -> None:
    """A provider echoing the request body in its error: the token is masked in the message."""
    fake.create_answer = httpx.Response(422, json={"error": "bad body", "env": HF_TOKEN})
    with pytest.raises(ProviderRejected) as e:
        await targon_with_token.deploy("pod-h", "img")
    assert HF_TOKEN not in str(e.value)
    assert "***" in str(e.value) and "HTTP 422" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


async def test_deploy_is_idempotent_by_name(targon: TargonProvider, fake: FakeTargon) -> None:
    """A second deploy of the same name finds the container and creates nothing."""
    first = await targon.deploy("pod-a", "img")
    again = await targon.deploy("pod-a", "img")
    assert again.container_id == first.container_id
    assert again.url == first.url
    assert len([r for r in fake.calls("POST") if r.url.path == "/v1/serverless"]) == 1


async def test_get_and_list(targon: TargonProvider, fake: FakeTargon) -> None:
    """get finds by exact name; list filters by prefix, sorted, skipping deleted entries."""
    await targon.deploy("miner-01-abc-1-0", "img")
    await targon.deploy("miner-01-abc-0-0", "img")
    await targon.deploy("miner-01-xyz-0-0", "img")
    fake.containers["gone"] = {"uid": "gone", "name": "miner-01-abc-9-9", "deleted": True}
    info = await targon.get("miner-01-abc-0-0")
    assert info.state is ContainerState.RUNNING
    assert info.url == f"https://{info.container_id}.serverless.targon.com"
    names = [c.name for c in await targon.list("miner-01-abc-")]
    assert names == ["miner-01-abc-0-0", "miner-01-abc-1-0"]
    with pytest.raises(ContainerNotFound, match="miner-01-abc-9-9"):
        await targon.get("miner-01-abc-9-9")
    with pytest.raises(ContainerNotFound):
        await targon.get("miner-01-abc")  # a prefix is not a name


async def test_delete_by_uid(targon: TargonProvider, fake: FakeTargon) -> None:
    """delete resolves the name to its uid and DELETEs /v1/serverless/{uid}."""
    info = await targon.deploy("pod-d", "img")
    await targon.delete("pod-d")
    (delete,) = fake.calls("DELETE")
    assert delete.url.path == f"/v1/serverless/{info.container_id}"
    with pytest.raises(ContainerNotFound):
        await targon.delete("pod-d")


async def test_delete_removes_duplicates(targon: TargonProvider, fake: FakeTargon) -> None:
    """Two containers with one name (an old race) are both deleted."""
    fake.containers["u1"] = {"uid": "u1", "name": "dup"}
    fake.containers["u2"] = {"uid": "u2", "name": "dup"}
    await targon.delete("dup")
    assert fake.containers == {}


async def test_delete_404_is_not_found(targon: TargonProvider, fake: FakeTargon) -> None:
    """A container listed but already gone when deleted is ContainerNotFound."""
    await targon.deploy("pod-g", "img")
    fake.fail_delete_with = 404
    with pytest.raises(ContainerNotFound, match="pod-g"):
        await targon.delete("pod-g")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ProviderUnavailable),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (400, ProviderRejected),
        (401, ProviderRejected),
        (403, ProviderRejected),
        (404, ProviderRejected),  # on list/deploy a 404 is a wrong request, not a missing pod
        (422, ProviderRejected),
    ],
)
async def test_http_errors_map_to_provider_errors(
    targon: TargonProvider, fake: FakeTargon, status: int, error: type[Exception]
) -> None:
    """429/5xx are retryable, other 4xx permanent; the body is truncated; cause is kept."""
    fake.fail_with = httpx.Response(status, text="x" * 5000)
    with pytest.raises(error) as e:
        await targon.deploy("pod-e", "img")
    assert f"HTTP {status}" in str(e.value)
    assert "pod-e" in str(e.value)
    assert "x" * ERROR_BODY_MAX_LENGTH in str(e.value)
    assert "x" * (ERROR_BODY_MAX_LENGTH + 1) not in str(e.value)


async def test_delete_errors_map(targon: TargonProvider, fake: FakeTargon) -> None:
    """A 503 while deleting is retryable."""
    await targon.deploy("pod-f", "img")
    fake.fail_delete_with = 503
    with pytest.raises(ProviderUnavailable):
        await targon.delete("pod-f")


async def test_network_error_is_unavailable() -> None:
    """A connection failure is ProviderUnavailable raised from the httpx error."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = TargonProvider(api_key=KEY, base_url=BASE, transport=httpx.MockTransport(refuse))
    try:
        with pytest.raises(ProviderUnavailable, match="network error") as e:
            await provider.list("x")
        assert isinstance(e.value.__cause__, httpx.ConnectError)
    finally:
        await provider.aclose()


async def test_malformed_answers_are_unavailable(targon: TargonProvider, fake: FakeTargon) -> None:
    """Non-JSON or shapeless answers are ProviderUnavailable, not KeyErrors."""
    fake.fail_with = httpx.Response(200, text="<html>maintenance</html>")
    with pytest.raises(ProviderUnavailable, match="not JSON"):
        await targon.list("x")
    fake.fail_with = httpx.Response(200, json={"unexpected": 1})
    with pytest.raises(ProviderUnavailable, match="unexpected response"):
        await targon.list("x")
    fake.fail_with = None
    fake.create_answer = httpx.Response(200, json={"name": "pod"})
    with pytest.raises(ProviderUnavailable, match="no serverless_uid"):
        await targon.deploy("pod", "img")
    assert await targon.list("x") == []
    assert targon.auth_headers() == {}
