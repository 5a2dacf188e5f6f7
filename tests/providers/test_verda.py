"""VerdaProvider against an in-memory fake of Verda's container API (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
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
from providers.verda import VerdaCredentials, VerdaProvider

BASE = "https://verda.test"
CREDENTIALS = VerdaCredentials(
    client_id="cid", client_secret=SecretStr("csecret"), generation_token=SecretStr("gen-token")
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeVerda:
    """Deployments in a dict, OAuth tokens that the test can revoke, scripted failures."""

    def __init__(self) -> None:
        self.deployments: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.token_answer: httpx.Response | None = None
        self.fail_with: httpx.Response | None = None
        self.on_create: Callable[[], httpx.Response] | None = None
        self.list_shape = "wrapped"

    def api_calls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/v1/oauth2/token"]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/oauth2/token":
            assert request.method == "POST"
            assert json.loads(request.content) == {
                "grant_type": "client_credentials",
                "client_id": "cid",
                "client_secret": "csecret",
            }
            if self.token_answer is not None:
                return self.token_answer
            self.tokens_issued += 1
            token = f"tok{self.tokens_issued}"
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": 3600})
        if (
            request.headers.get("authorization", "").removeprefix("Bearer ")
            not in self.valid_tokens
        ):
            return httpx.Response(401, json={"error": "invalid token"})
        if self.fail_with is not None:
            return self.fail_with
        prefix = "/v1/container-deployments"
        if request.method == "GET" and path == prefix:
            items = list(self.deployments.values())
            return httpx.Response(200, json={"deployments": items} if self.list_shape else items)
        if request.method == "POST" and path == prefix:
            if self.on_create is not None:
                return self.on_create()
            body = json.loads(request.content)
            item = {"name": body["name"], "status": "initializing", "endpoint_base_url": None}
            self.deployments[body["name"]] = item
            return httpx.Response(201, json=item)
        name = path.removeprefix(prefix + "/")
        if name not in self.deployments:
            return httpx.Response(404, json={"error": f"deployment {name} not found"})
        if request.method == "GET":
            return httpx.Response(200, json=self.deployments[name])
        if request.method == "DELETE":
            del self.deployments[name]
            return httpx.Response(204)
        return httpx.Response(405)


@pytest.fixture
def fake() -> FakeVerda:
    return FakeVerda()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verda(fake: FakeVerda, clock: Clock) -> AsyncIterator[VerdaProvider]:
    provider = VerdaProvider(
        CREDENTIALS, base_url=BASE, transport=httpx.MockTransport(fake.handler), clock=clock
    )
    yield provider
    await provider.aclose()


async def test_deploy_posts_the_reference_body(verda: VerdaProvider, fake: FakeVerda) -> None:
    """deploy looks the name up in the list (as upstream), then POSTs the documented
    container deployment."""
    assert isinstance(verda, GpuProvider)
    info = await verda.deploy("miner-01-abc-0-0", "registry/img:tag")
    get, post = fake.api_calls()
    assert (get.method, get.url.path) == ("GET", "/v1/container-deployments")
    assert (post.method, post.url.path) == ("POST", "/v1/container-deployments")
    body = json.loads(post.content)
    assert body["name"] == "miner-01-abc-0-0"
    assert body["containers"] == [
        {
            "image": "registry/img:tag",
            "exposed_port": 10006,
            "healthcheck": {"enabled": True, "port": 10006, "path": "/health"},
        }
    ]
    assert "env" not in body["containers"][0]  # no HF_TOKEN: no env (upstream)
    assert body["compute"] == {"name": "H200", "size": 1}
    assert body["is_spot"] is True  # upstream rents spot (test_conformance has the whole body)
    assert body["scaling"]["concurrent_requests_per_replica"] == 5
    assert body["scaling"]["min_replica_count"] == body["scaling"]["max_replica_count"] == 1
    assert post.headers["authorization"] == "Bearer tok1"
    assert info.provider is ProviderName.VERDA
    assert info.container_id == "miner-01-abc-0-0"
    assert info.state is ContainerState.PENDING
    assert info.url is None


HF_TOKEN = "hf_secretvalue456"


@pytest.fixture
async def verda_with_token(fake: FakeVerda, clock: Clock) -> AsyncIterator[VerdaProvider]:
    provider = VerdaProvider(
        CREDENTIALS,
        base_url=BASE,
        transport=httpx.MockTransport(fake.handler),
        clock=clock,
        env=pod_env(SecretStr(HF_TOKEN)),
    )
    yield provider
    await provider.aclose()


async def test_deploy_sends_hf_token_as_plain_env(
    verda_with_token: VerdaProvider, fake: FakeVerda
) -> None:
    """With HF_TOKEN set, the container carries it as one plain env entry."""
    await verda_with_token.deploy("pod-h", "registry/img:tag")
    post = next(r for r in fake.api_calls() if r.method == "POST")
    (container,) = json.loads(post.content)["containers"]
    assert container["env"] == [
        {"name": "HF_TOKEN", "value_or_reference_to_secret": HF_TOKEN, "type": "plain"}
    ]
    assert container["image"] == "registry/img:tag"


async def test_deploy_error_never_carries_the_hf_token(
    verda_with_token: VerdaProvider, fake: FakeVerda
) -> None:
    """An error answer echoing the request body has the token masked."""
    fake.on_create = lambda: httpx.Response(400, text=f"invalid env value {HF_TOKEN}")
    with pytest.raises(ProviderRejected) as e:
        await verda_with_token.deploy("pod-h", "img")
    assert HF_TOKEN not in str(e.value)
    assert "invalid env value ***" in str(e.value)


async def test_deploy_is_idempotent_by_name(verda: VerdaProvider, fake: FakeVerda) -> None:
    """An existing deployment is returned without a second POST."""
    await verda.deploy("pod-a", "img")
    await verda.deploy("pod-a", "img")
    assert [r.method for r in fake.api_calls()] == ["GET", "POST", "GET"]


async def test_deploy_conflict_returns_the_existing_one(
    verda: VerdaProvider, fake: FakeVerda
) -> None:
    """409 on create (a concurrent attempt made it first) resolves to the existing deployment."""

    def conflict() -> httpx.Response:
        fake.deployments["pod-c"] = {"name": "pod-c", "status": "healthy"}
        return httpx.Response(409, json={"error": "exists"})

    fake.on_create = conflict
    info = await verda.deploy("pod-c", "img")
    assert info.state is ContainerState.RUNNING
    assert [r.method for r in fake.api_calls()] == ["GET", "POST", "GET"]


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("healthy", ContainerState.RUNNING),
        ("initializing", ContainerState.PENDING),
        ("unhealthy", ContainerState.PENDING),
        ("something-new", ContainerState.PENDING),
        ("failed", ContainerState.FAILED),
        ("paused", ContainerState.STOPPED),
        (None, ContainerState.PENDING),
    ],
)
async def test_get_maps_status_and_endpoint(
    verda: VerdaProvider, fake: FakeVerda, status: str | None, state: ContainerState
) -> None:
    """get maps Verda's status to ContainerState and returns endpoint_base_url as the URL."""
    fake.deployments["pod-s"] = {
        "name": "pod-s",
        "status": status,
        "endpoint_base_url": "https://containers.verda.test/pod-s/",
    }
    info = await verda.get("pod-s")
    assert info.state is state
    assert info.url == "https://containers.verda.test/pod-s"


async def test_get_and_delete_missing_are_not_found(verda: VerdaProvider) -> None:
    """Not listed (get) or 404 (delete) is ContainerNotFound."""
    with pytest.raises(ContainerNotFound, match="pod-m"):
        await verda.get("pod-m")
    with pytest.raises(ContainerNotFound, match="HTTP 404"):
        await verda.delete("pod-m")


async def test_delete_and_list(verda: VerdaProvider, fake: FakeVerda) -> None:
    """list filters by prefix (both response shapes); delete removes by name."""
    for name in ("miner-02-b-1-0", "miner-02-b-0-0", "miner-02-c-0-0"):
        fake.deployments[name] = {"name": name, "status": "healthy"}
    assert [c.name for c in await verda.list("miner-02-b-")] == ["miner-02-b-0-0", "miner-02-b-1-0"]
    fake.list_shape = ""
    assert len(await verda.list("miner-02-")) == 3
    await verda.delete("miner-02-b-0-0")
    assert sorted(fake.deployments) == ["miner-02-b-1-0", "miner-02-c-0-0"]


async def test_token_is_cached_until_expiry(
    verda: VerdaProvider, fake: FakeVerda, clock: Clock
) -> None:
    """One token serves many calls; a new one is fetched shortly before expiry."""
    for _ in range(3):
        with pytest.raises(ContainerNotFound):
            await verda.get("x")
    assert fake.tokens_issued == 1
    clock.now += 3600 - 120  # still more than the refresh margin left
    await verda.list("")
    assert fake.tokens_issued == 1
    clock.now += 90  # inside the last minute: refresh first
    await verda.list("")
    assert fake.tokens_issued == 2


async def test_revoked_token_is_refreshed_once(verda: VerdaProvider, fake: FakeVerda) -> None:
    """A 401 on an API call fetches a fresh token and retries the call once."""
    await verda.list("")
    fake.valid_tokens.clear()
    assert await verda.list("") == []
    assert fake.tokens_issued == 2


async def test_bad_credentials_are_rejected_naming_the_variables(
    verda: VerdaProvider, fake: FakeVerda
) -> None:
    """A refused token request is permanent and points at VERDA_CLIENT_ID/SECRET."""
    fake.token_answer = httpx.Response(401, json={"error": "invalid_client"})
    with pytest.raises(ProviderRejected, match="VERDA_CLIENT_ID"):
        await verda.list("")


async def test_token_endpoint_outage_is_unavailable(verda: VerdaProvider, fake: FakeVerda) -> None:
    """A 503 from the token endpoint is retryable."""
    fake.token_answer = httpx.Response(503, text="down")
    with pytest.raises(ProviderUnavailable, match="token"):
        await verda.list("")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ProviderUnavailable),
        (502, ProviderUnavailable),
        (400, ProviderRejected),
        (403, ProviderRejected),
        (422, ProviderRejected),
    ],
)
async def test_http_errors_map_to_provider_errors(
    verda: VerdaProvider, fake: FakeVerda, status: int, error: type[Exception]
) -> None:
    """429/5xx are retryable, other 4xx permanent; bodies are truncated."""
    fake.fail_with = httpx.Response(status, text="y" * 5000)
    with pytest.raises(error) as e:
        await verda.deploy("pod-e", "img")
    assert f"HTTP {status}" in str(e.value)
    assert "pod-e" in str(e.value)
    assert "y" * (ERROR_BODY_MAX_LENGTH + 1) not in str(e.value)


async def test_network_error_is_unavailable() -> None:
    """A timeout talking to Verda is ProviderUnavailable raised from the httpx error."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    provider = VerdaProvider(CREDENTIALS, base_url=BASE, transport=httpx.MockTransport(hang))
    try:
        with pytest.raises(ProviderUnavailable, match="network error") as e:
            await provider.get("x")
        assert isinstance(e.value.__cause__, httpx.ReadTimeout)
    finally:
        await provider.aclose()


async def test_auth_headers_carry_the_generation_token(verda: VerdaProvider) -> None:
    """Miner calls use VERDA_GENERATION_TOKEN, not the OAuth token; secrets stay out of repr."""
    assert verda.auth_headers() == {"Authorization": "Bearer gen-token"}
    assert "gen-token" not in repr(CREDENTIALS)
    assert "csecret" not in repr(CREDENTIALS)
