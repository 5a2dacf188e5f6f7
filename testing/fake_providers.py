"""Fake Targon, Verda and RunPod control APIs: real HTTP servers on loopback with real pods.

Each server follows its provider's API shapes (REFERENCE.md sec. 8 and 21: auth, create, get,
list, delete, error bodies) and starts a reference miner (`python -m miner`, through
`providers.local.LocalProvider`) per created pod. The pod URL it reports leads to a small
proxy on the same server (`/pods/{id}/...`), so a test can make a pod misbehave (never healthy,
dead mid-run) and the Verda proxy can insist on the inference bearer, as Verda's endpoint does.

Misbehaviour is switched on through `FakeProviderServer.faults`: no capacity (the create error),
429 with Retry-After, 5xx, auth failure, pods never healthy, slow list calls. Every control call
is recorded (`requests`) so conformance tests compare what arrived with the documented shape.

Operators can run one for the demo::

    python -m testing.fake_providers --kind targon --port 8710

prints the settings (base URL, credentials) that point a worker at it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from models.audit import ProviderName
from providers.base import ContainerNotFound, ContainerState
from providers.local import LocalProvider

logger = logging.getLogger(__name__)

TARGON_API_KEY = "fake-targon-key-a1b2c3"
VERDA_CLIENT_ID = "fake-verda-client"
VERDA_CLIENT_SECRET = "fake-verda-secret-d4e5f6"  # noqa: S105 (a fake server's own secret)
VERDA_GENERATION_TOKEN = "fake-verda-inference-g7h8i9"  # noqa: S105
RUNPOD_API_KEY = "fake-runpod-key-j1k2l3"
PROXY_PREFIX = "/pods"
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "authorization"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    """What the fake does wrong; tests flip these while it runs."""

    no_capacity: bool = False  # create answers the provider's "no GPU available" error
    rate_limited_calls: int = 0  # the next N control calls answer 429 with Retry-After
    retry_after_seconds: float = 1.0
    server_error_calls: int = 0  # the next N control calls answer 500
    auth_failure: bool = False  # every control call (Verda: the token call) answers 401
    never_healthy: bool = False  # every pod's /health answers 503
    list_delay_seconds: float = 0.0  # each list call takes this long


@dataclass(frozen=True)
class RecordedRequest:
    """One control-API call as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


@dataclass
class FakePod:
    """One rented pod: its provider id and name, and its rental times (monotonic seconds)."""

    pod_id: str
    name: str
    image: str
    created_at: float
    deleted_at: float | None = None
    killed: bool = False  # its miner died (a pod dying mid-run)

    @property
    def live(self) -> bool:
        return self.deleted_at is None


@dataclass
class _Pods:
    by_id: dict[str, FakePod] = field(default_factory=dict)

    def live(self) -> list[FakePod]:
        return [pod for pod in self.by_id.values() if pod.live]

    def named(self, name: str) -> list[FakePod]:
        return [pod for pod in self.live() if pod.name == name]


class FakeProviderServer:
    """Common part: the aiohttp server, faults, request log, pods and the miner proxy.

    Owns the miner processes of its pods (killed by `aclose`) and its `pods_dir`. Subclasses add
    the provider's routes and shapes. Use as `async with FakeTargon(dir) as server:`.
    """

    kind: ProviderName

    def __init__(
        self,
        pods_dir: Path,
        *,
        call_log: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        images: dict[str, str] | None = None,
    ) -> None:
        """Create a server (not started).

        Args:
            pods_dir: State of the reference miners it runs (a LocalProvider directory).
            call_log: Passed to every miner (`--call-log`): one JSON line per generate call.
            host: Loopback address to bind.
            port: Port to bind (0: any free one).
            images: Docker image -> `local/reference-miner?...` it stands for (LOCAL_IMAGES:
                the demo's build tracker names real-looking images).
        """
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.pods = _Pods()
        self._local = LocalProvider(pods_dir, call_log=call_log, host=host, images=images)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application(middlewares=[self._control_middleware], client_max_size=2**30)
        app.router.add_route("*", PROXY_PREFIX + "/{key}/{tail:.*}", self._proxy)
        self.add_routes(app)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self._host}:{port}"

    async def aclose(self) -> None:
        """Stop serving and kill every miner it started."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self._local.delete_all()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- what tests read and do ----------------------------------------------------------------

    def calls(self, method: str, path_prefix: str = "") -> list[RecordedRequest]:
        """Recorded control calls with that method whose path starts with `path_prefix`."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def live_names(self) -> list[str]:
        """Names of the pods not deleted yet, sorted."""
        return sorted(pod.name for pod in self.pods.live())

    async def kill(self, name: str) -> None:
        """The miner of every live pod named `name` dies; the provider still lists the pod."""
        for pod in self.pods.named(name):
            pod.killed = True
            with contextlib.suppress(ContainerNotFound):
                await self._local.delete(pod.pod_id)

    def settings(self) -> dict[str, str]:
        """Environment (settings by alias) pointing a worker at this server."""
        raise NotImplementedError

    # --- for subclasses ------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register the provider's control routes."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        """Whether a control call carries valid credentials."""
        raise NotImplementedError

    def error(self, status: int, message: str) -> web.Response:
        """An error answer in the provider's body shape."""
        return web.json_response({"error": message}, status=status)

    def capacity_error(self) -> web.Response:
        """The provider's answer to a create when it has no GPU of that kind."""
        raise NotImplementedError

    def pod_url(self, pod: FakePod) -> str:
        """Where the pod's miner is reached (through this server's proxy)."""
        return f"{self.base_url}{PROXY_PREFIX}/{pod.pod_id}"

    def miner_authorized(self, request: web.Request) -> bool:
        """Whether a call to a pod's miner may pass the provider's endpoint."""
        return True

    async def create_pod(self, name: str, image: str, pod_id: str | None = None) -> FakePod:
        """Rent a pod: start its reference miner (ids are hex: no dashes)."""
        pod = FakePod(
            pod_id=pod_id or uuid.uuid4().hex[:14], name=name, image=image, created_at=time.time()
        )
        await self._local.deploy(pod.pod_id, image)
        self.pods.by_id[pod.pod_id] = pod
        return pod

    async def delete_pod(self, pod: FakePod) -> None:
        """Stop renting `pod` and kill its miner."""
        pod.deleted_at = time.time()
        with contextlib.suppress(ContainerNotFound):
            await self._local.delete(pod.pod_id)

    async def list_delay(self) -> None:
        """The configured slowness of list calls."""
        if self.faults.list_delay_seconds > 0:
            await asyncio.sleep(self.faults.list_delay_seconds)

    # --- internals -----------------------------------------------------------------------------

    @web.middleware
    async def _control_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith(PROXY_PREFIX + "/"):
            return await handler(request)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        faults = self.faults
        if faults.rate_limited_calls > 0:
            faults.rate_limited_calls -= 1
            response = self.error(429, "rate limit exceeded")
            response.headers["Retry-After"] = f"{faults.retry_after_seconds:g}"
            return response
        if faults.server_error_calls > 0:
            faults.server_error_calls -= 1
            return self.error(500, "internal server error")
        if not self.authorized(request):
            return self.error(401, "unauthorized")
        return await handler(request)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        pod = self.pods.by_id.get(key) or self.pods.by_id.get(key.rpartition("-")[0])
        if pod is None or not pod.live:
            return web.Response(status=404, text="no such endpoint")
        if not self.miner_authorized(request):
            return web.Response(status=401, text="unauthorized")
        tail = "/" + request.match_info["tail"]
        if self.faults.never_healthy and tail == "/health":
            return web.Response(status=503, text="starting")
        try:
            info = await self._local.get(pod.pod_id)
        except ContainerNotFound:
            return web.Response(status=502, text="pod is gone")
        if pod.killed or info.state is not ContainerState.RUNNING or info.url is None:
            return web.Response(status=502, text="pod is not running")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if self._session is None:
            return web.Response(status=503, text="fake server not started")
        try:
            async with self._session.request(
                request.method,
                info.url + tail,
                params=request.query,
                data=await request.read(),
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                content = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
                return web.Response(status=upstream.status, body=content, headers=out)
        except aiohttp.ClientError:
            return web.Response(status=502, text="pod unreachable")


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None


class FakeTargon(FakeProviderServer):
    """Targon serverless: `POST /v1/serverless`, `POST /v1/serverless/list`,
    `DELETE /v1/serverless/{uid}`; Bearer TARGON_API_KEY; items carry their own `url`."""

    kind = ProviderName.TARGON

    def settings(self) -> dict[str, str]:
        """TARGON_BASE_URL and TARGON_API_KEY."""
        return {"TARGON_BASE_URL": self.base_url, "TARGON_API_KEY": TARGON_API_KEY}

    def add_routes(self, app: web.Application) -> None:
        """Create, list, delete."""
        app.router.add_post("/v1/serverless", self._create)
        app.router.add_post("/v1/serverless/list", self._list)
        app.router.add_delete("/v1/serverless/{uid}", self._delete)

    def authorized(self, request: web.Request) -> bool:
        """Bearer TARGON_API_KEY, unless auth failure is switched on."""
        return not self.faults.auth_failure and _bearer(request) == TARGON_API_KEY

    def capacity_error(self) -> web.Response:
        """503 naming the resource."""
        return self.error(503, "insufficient capacity for resource h200-small, try again later")

    def _item(self, pod: FakePod) -> dict[str, Any]:
        return {
            "uid": pod.pod_id,
            "name": pod.name,
            "url": self.pod_url(pod),
            "status": "running",
            "cost": 3.99,
            "created_at": pod.created_at,
        }

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.faults.no_capacity:
            return self.capacity_error()
        container = body.get("container") or {}
        if not isinstance(body.get("name"), str) or not isinstance(container.get("image"), str):
            return self.error(422, "name and container.image are required")
        pod = await self.create_pod(body["name"], container["image"])
        return web.json_response({"serverless_uid": pod.pod_id, "name": pod.name})

    async def _list(self, request: web.Request) -> web.Response:
        await self.list_delay()
        return web.json_response({"resources": [self._item(pod) for pod in self.pods.live()]})

    async def _delete(self, request: web.Request) -> web.Response:
        pod = self.pods.by_id.get(request.match_info["uid"])
        if pod is None or not pod.live:
            return self.error(404, "serverless resource not found")
        await self.delete_pod(pod)
        return web.json_response({"uid": pod.pod_id, "deleted": True})


class FakeVerda(FakeProviderServer):
    """Verda container deployments: OAuth2 client credentials, `/v1/container-deployments`
    (create, list, get and delete by name, `/status`); the endpoint wants the inference bearer."""

    kind = ProviderName.VERDA

    def __init__(self, pods_dir: Path, **kwargs: Any) -> None:
        """As `FakeProviderServer`; also keeps the access tokens it issued."""
        super().__init__(pods_dir, **kwargs)
        self.tokens: set[str] = set()

    def settings(self) -> dict[str, str]:
        """VERDA_BASE_URL and the three VERDA_* secrets."""
        return {
            "VERDA_BASE_URL": self.base_url,
            "VERDA_CLIENT_ID": VERDA_CLIENT_ID,
            "VERDA_CLIENT_SECRET": VERDA_CLIENT_SECRET,
            "VERDA_GENERATION_TOKEN": VERDA_GENERATION_TOKEN,
        }

    def add_routes(self, app: web.Application) -> None:
        """Token, create, list, get, status, delete."""
        app.router.add_post("/v1/oauth2/token", self._token)
        app.router.add_post("/v1/container-deployments", self._create)
        app.router.add_get("/v1/container-deployments", self._list)
        app.router.add_get("/v1/container-deployments/{name}", self._get)
        app.router.add_get("/v1/container-deployments/{name}/status", self._status)
        app.router.add_delete("/v1/container-deployments/{name}", self._delete)

    def authorized(self, request: web.Request) -> bool:
        """The token call checks its body; every other call needs an issued access token."""
        if request.path == "/v1/oauth2/token":
            return True
        return _bearer(request) in self.tokens

    def error(self, status: int, message: str) -> web.Response:
        """Verda's `{code, message}` shape."""
        code = {401: "unauthorized_request", 404: "not_found", 409: "conflict"}.get(status, "error")
        return web.json_response({"code": code, "message": message}, status=status)

    def capacity_error(self) -> web.Response:
        """400 "not enough capacity"."""
        return self.error(400, "Not enough capacity available for H200 (spot), try again later")

    def pod_url(self, pod: FakePod) -> str:
        """Verda's id is the deployment name."""
        return f"{self.base_url}{PROXY_PREFIX}/{pod.name}"

    def miner_authorized(self, request: web.Request) -> bool:
        """Verda's endpoint wants Bearer VERDA_GENERATION_TOKEN."""
        return _bearer(request) == VERDA_GENERATION_TOKEN

    def _deployment(self, pod: FakePod) -> dict[str, Any]:
        return {
            "name": pod.name,
            "containers": [{"image": pod.image, "exposed_port": 10006}],
            "endpoint_base_url": self.pod_url(pod),
            "created_at": pod.created_at,
            "compute": {"name": "H200", "size": 1},
            "is_spot": True,
        }

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (
            self.faults.auth_failure
            or body.get("grant_type") != "client_credentials"
            or body.get("client_id") != VERDA_CLIENT_ID
            or body.get("client_secret") != VERDA_CLIENT_SECRET
        ):
            return self.error(401, "Invalid client credentials")
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "cloud"}
        )

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.faults.no_capacity:
            return self.capacity_error()
        name = body.get("name")
        containers = body.get("containers") or [{}]
        image = containers[0].get("image")
        if not isinstance(name, str) or not isinstance(image, str):
            return self.error(400, "name and containers[0].image are required")
        if self.pods.named(name):
            return self.error(409, f"deployment {name} already exists")
        pod = await self.create_pod(name, image, pod_id=name)
        return web.json_response(self._deployment(pod), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        await self.list_delay()
        return web.json_response([self._deployment(pod) for pod in self.pods.live()])

    async def _get(self, request: web.Request) -> web.Response:
        found = self.pods.named(request.match_info["name"])
        if not found:
            return self.error(404, "deployment not found")
        return web.json_response(self._deployment(found[0]))

    async def _status(self, request: web.Request) -> web.Response:
        found = self.pods.named(request.match_info["name"])
        if not found:
            return self.error(404, "deployment not found")
        status = "unhealthy" if found[0].killed else "healthy"
        return web.json_response({"status": status})

    async def _delete(self, request: web.Request) -> web.Response:
        found = self.pods.named(request.match_info["name"])
        if not found:
            return self.error(404, "deployment not found")
        for pod in found:
            await self.delete_pod(pod)
        return web.Response(status=204)

    async def delete_pod(self, pod: FakePod) -> None:
        """Deleting frees the name: the id (the name) may be reused by a later create."""
        await super().delete_pod(pod)
        self.pods.by_id.pop(pod.pod_id, None)
        self.pods.by_id[f"{pod.pod_id}@{pod.deleted_at}"] = pod


class FakeRunpod(FakeProviderServer):
    """RunPod REST v1: `POST|GET /v1/pods`, `DELETE /v1/pods/{id}`; Bearer key; no URL in
    answers: pods are reached through the proxy template `settings()` gives."""

    kind = ProviderName.RUNPOD

    def settings(self) -> dict[str, str]:
        """RUNPOD_BASE_URL, RUNPOD_PROVIDER_API_KEY and RUNPOD_PROXY_URL (this server)."""
        return {
            "RUNPOD_BASE_URL": self.base_url,
            "RUNPOD_PROVIDER_API_KEY": RUNPOD_API_KEY,
            "RUNPOD_PROXY_URL": f"{self.base_url}{PROXY_PREFIX}/{{pod_id}}-{{port}}",
        }

    def add_routes(self, app: web.Application) -> None:
        """Create, list, get, delete."""
        app.router.add_post("/v1/pods", self._create)
        app.router.add_get("/v1/pods", self._list)
        app.router.add_get("/v1/pods/{id}", self._get)
        app.router.add_delete("/v1/pods/{id}", self._delete)

    def authorized(self, request: web.Request) -> bool:
        """Bearer RUNPOD_PROVIDER_API_KEY, unless auth failure is switched on."""
        return not self.faults.auth_failure and _bearer(request) == RUNPOD_API_KEY

    def error(self, status: int, message: str) -> web.Response:
        """RunPod's `{error, status}` shape."""
        return web.json_response({"error": message, "status": status}, status=status)

    def capacity_error(self) -> web.Response:
        """RunPod's "no longer any instances available" (a 500)."""
        return self.error(
            500,
            "There are no longer any instances available with the requested specifications. "
            "Please refresh and try again.",
        )

    def _pod(self, pod: FakePod) -> dict[str, Any]:
        return {
            "id": pod.pod_id,
            "name": pod.name,
            "imageName": pod.image,
            "desiredStatus": "EXITED" if pod.killed else "RUNNING",
            "costPerHr": 3.59,
            "gpuCount": 1,
        }

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.faults.no_capacity:
            return self.capacity_error()
        if not isinstance(body.get("name"), str) or not isinstance(body.get("imageName"), str):
            return self.error(400, "name and imageName are required")
        pod = await self.create_pod(body["name"], body["imageName"])
        return web.json_response(self._pod(pod), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        await self.list_delay()
        return web.json_response([self._pod(pod) for pod in self.pods.live()])

    async def _get(self, request: web.Request) -> web.Response:
        pod = self.pods.by_id.get(request.match_info["id"])
        if pod is None or not pod.live:
            return self.error(404, "pod not found")
        return web.json_response(self._pod(pod))

    async def _delete(self, request: web.Request) -> web.Response:
        pod = self.pods.by_id.get(request.match_info["id"])
        if pod is None or not pod.live:
            return self.error(404, "pod not found")
        await self.delete_pod(pod)
        return web.Response(status=200)


FAKES: dict[ProviderName, type[FakeProviderServer]] = {
    ProviderName.TARGON: FakeTargon,
    ProviderName.VERDA: FakeVerda,
    ProviderName.RUNPOD: FakeRunpod,
}


async def _serve(kind: ProviderName, pods_dir: Path, port: int) -> None:
    async with FAKES[kind](pods_dir, port=port) as server:
        env = {"GPU_PROVIDERS": str(kind), **server.settings()}
        print("\n".join(f"{k}={v}" for k, v in env.items()), flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Serve one fake provider until Ctrl-C; prints the settings that point a worker at it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=[str(k) for k in FAKES], default="targon")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pods-dir", type=Path, default=Path(".work/fake-provider-pods"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ProviderName(args.kind), args.pods_dir, args.port))


if __name__ == "__main__":
    main()
