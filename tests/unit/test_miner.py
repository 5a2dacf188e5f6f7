"""The reference miner: real `python -m miner` processes on loopback ports, plus its mesh model."""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh

from miner.__main__ import parse_args
from miner.mesh import FAMILIES, Family, MeshSpec, build_mesh, encode_glb, generate_glb, mesh_spec
from miner.server import DIED_EXIT_CODE
from models.miner_api import (
    GENERATE_PATH,
    GLB_CONTENT_TYPE,
    HEALTH_PATH,
    PROMPT_IMAGE_FIELD,
    SEED_FIELD,
    STATS_PATH,
)
from tests.providers.local_helpers import (
    MinerProcess,
    free_port,
    health_status,
    read_call_log,
    wait_healthy,
    wait_until,
)

IMAGE = b"\x89PNG\r\n\x1a\n fake prompt image bytes"
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()
SEEDS = list(range(3035696319, 3035696319 + 8))


async def generate(http: httpx.AsyncClient, url: str, seed: int) -> httpx.Response:
    return await http.post(
        f"{url}{GENERATE_PATH}",
        files={PROMPT_IMAGE_FIELD: ("prompt.png", IMAGE, "image/png")},
        data={SEED_FIELD: str(seed)},
    )


class Miners:
    def __init__(self, root: Path) -> None:
        self.call_log = root / "calls.jsonl"
        self.a = MinerProcess(
            free_port(), "--fail-rate", "0.5", "--call-log", str(self.call_log), log=root / "a.log"
        )
        self.b = MinerProcess(free_port(), "--fail-rate", "0.5", log=root / "b.log")
        self.variant = MinerProcess(free_port(), "--variant", "1", log=root / "v.log")
        self.failing = MinerProcess(free_port(), "--fail-rate", "1", log=root / "f.log")
        self.all = [self.a, self.b, self.variant, self.failing]


@pytest.fixture(scope="module")
async def miners(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Miners]:
    started = Miners(tmp_path_factory.mktemp("miners"))
    try:
        async with httpx.AsyncClient() as http:
            await asyncio.gather(*(wait_healthy(http, m.url) for m in started.all))
        yield started
    finally:
        for miner in started.all:  # signal all first, so they shut down in parallel
            miner.process.terminate()
        for miner in started.all:
            miner.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def stopped_after(tmp_path: Path) -> Iterator[list[MinerProcess]]:
    """Miners a single test starts; all stopped at teardown."""
    owned: list[MinerProcess] = []
    yield owned
    for miner in owned:
        miner.stop()


async def test_same_inputs_give_identical_bytes_in_every_process(
    miners: Miners, http: httpx.AsyncClient
) -> None:
    """Two miner processes and this one give byte-identical GLBs; failures match too."""
    statuses = []
    for seed in SEEDS:
        ra = await generate(http, miners.a.url, seed)
        rb = await generate(http, miners.b.url, seed)
        assert ra.status_code == rb.status_code
        statuses.append(ra.status_code)
        if ra.status_code == 200:
            assert ra.headers["content-type"] == GLB_CONTENT_TYPE
            assert ra.content == rb.content == generate_glb(IMAGE_SHA, seed, 0)
    # fail_rate 0.5 with seeded randomness: both outcomes occur, identically in both processes
    assert set(statuses) == {200, 500}


async def test_variant_changes_output(miners: Miners, http: httpx.AsyncClient) -> None:
    """A different variant answers with different bytes for the same image and seed."""
    r = await generate(http, miners.variant.url, 7)
    assert r.status_code == 200
    assert r.content == generate_glb(IMAGE_SHA, 7, 1)
    assert r.content != generate_glb(IMAGE_SHA, 7, 0)


def test_variant_changes_shape_family_and_hue() -> None:
    """For many inputs, variants 0/1/2 differ in primitive family and by a large hue step."""
    for i in range(64):
        sha = hashlib.sha256(f"image-{i}".encode()).hexdigest()
        specs = [mesh_spec(sha, i * 7919, variant) for variant in range(3)]
        for x in range(3):
            for y in range(x + 1, 3):
                assert specs[x].family != specs[y].family
                gap = abs(specs[x].hue - specs[y].hue)
                assert min(gap, 1 - gap) >= 0.25
    assert len(
        {mesh_spec(hashlib.sha256(bytes([i])).hexdigest(), 1, 0).family for i in range(64)}
    ) == len(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_a_closed_outward_facing_mesh(family: Family) -> None:
    """Each primitive loads as a watertight mesh with outward normals (positive volume)."""
    spec = MeshSpec(family=family, hue=0.5, scale=(1.0, 0.8, 1.2), angle=1.0, ratio=0.3)
    glb = io.BytesIO(encode_glb(build_mesh(spec), family.value))
    mesh = trimesh.load(glb, file_type="glb", force="mesh", process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0
    assert 0.2 < max(mesh.extents) < 2.0


def test_glb_colours_follow_the_spec() -> None:
    """The GLB loads as one vertex-coloured mesh whose colour has the spec's hue."""
    for variant in (0, 1):
        spec = mesh_spec(IMAGE_SHA, 42, variant)
        glb = io.BytesIO(generate_glb(IMAGE_SHA, 42, variant))
        mesh = trimesh.load(glb, file_type="glb", force="mesh")
        assert isinstance(mesh, trimesh.Trimesh)
        assert isinstance(mesh.visual, trimesh.visual.ColorVisuals)
        colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(float) / 255
        brightest = colors[np.argmax(colors.sum(axis=1))]
        hue = colorsys.rgb_to_hsv(*brightest)[0]
        assert min(abs(hue - spec.hue), 1 - abs(hue - spec.hue)) < 0.02
        assert len(mesh.faces) > 0


async def test_fail_rate_one_always_answers_500(miners: Miners, http: httpx.AsyncClient) -> None:
    """fail_rate=1: every well-formed request gets HTTP 500 with an explanation."""
    for seed in (1, 2, 3):
        r = await generate(http, miners.failing.url, seed)
        assert r.status_code == 500
        assert "failure" in r.json()["error"]


PNG = ("p.png", IMAGE)


@pytest.mark.parametrize(
    ("data", "upload", "message"),
    [
        ({SEED_FIELD: "1"}, {"other": PNG}, "missing file field 'prompt_image_file'"),
        ({}, {PROMPT_IMAGE_FIELD: PNG}, "missing form field 'seed'"),
        ({SEED_FIELD: "abc"}, {PROMPT_IMAGE_FIELD: PNG}, "decimal integer"),
        ({SEED_FIELD: "-1"}, {PROMPT_IMAGE_FIELD: PNG}, "must be in 0.."),
        ({SEED_FIELD: "1"}, {PROMPT_IMAGE_FIELD: ("p.png", b"")}, "is empty"),
        ({SEED_FIELD: "1", PROMPT_IMAGE_FIELD: "text"}, {"x": PNG}, "must be a file upload"),
    ],
)
async def test_bad_requests_get_400(
    miners: Miners,
    http: httpx.AsyncClient,
    data: dict[str, str],
    upload: dict[str, tuple[str, bytes]],
    message: str,
) -> None:
    """Missing or invalid fields answer 400 with a message naming the problem."""
    r = await http.post(f"{miners.b.url}{GENERATE_PATH}", data=data, files=upload)
    assert r.status_code == 400
    assert message in r.json()["error"]


async def test_non_multipart_body_gets_400(miners: Miners, http: httpx.AsyncClient) -> None:
    """A JSON body is refused with a message naming the expected multipart fields."""
    r = await http.post(f"{miners.b.url}{GENERATE_PATH}", json={"seed": 1})
    assert r.status_code == 400
    assert "multipart/form-data" in r.json()["error"]
    assert PROMPT_IMAGE_FIELD in r.json()["error"]


async def test_call_log_and_stats_count_requests(miners: Miners, http: httpx.AsyncClient) -> None:
    """Each well-formed request logs 'received' then 'ok'/'failed'; /stats agrees."""
    before = read_call_log(miners.call_log)
    stats_before = (await http.get(f"{miners.a.url}{STATS_PATH}")).json()
    answers = [(await generate(http, miners.a.url, seed)).status_code for seed in (11, 12, 13)]
    bad = await http.post(
        f"{miners.a.url}{GENERATE_PATH}", data={SEED_FIELD: "1"}, files={"x": ("x", b"x")}
    )
    assert bad.status_code == 400
    lines = read_call_log(miners.call_log)[len(before) :]
    received = [line for line in lines if line["status"] == "received"]
    assert [line["seed"] for line in received] == [11, 12, 13]
    assert {line["image_sha256"] for line in received} == {IMAGE_SHA}
    assert {line["port"] for line in lines} == {miners.a.port}
    assert {line["pid"] for line in lines} == {miners.a.process.pid}
    answered = [line["status"] for line in lines if line["status"] in ("ok", "failed")]
    assert answered == ["ok" if code == 200 else "failed" for code in answers]
    assert [line["status"] for line in lines].count("bad_request") == 1
    stats = (await http.get(f"{miners.a.url}{STATS_PATH}")).json()
    assert stats["received"] - stats_before["received"] == 3
    assert stats["bad_requests"] - stats_before["bad_requests"] == 1
    assert stats["pid"] == miners.a.process.pid


async def test_health_is_503_until_startup_elapsed(
    http: httpx.AsyncClient, tmp_path: Path, stopped_after: list[MinerProcess]
) -> None:
    """--startup S: /health answers 503 first, then 200 once S seconds have passed."""
    miner = MinerProcess(free_port(), "--startup", "1", log=tmp_path / "m.log")
    stopped_after.append(miner)
    seen: list[int] = []

    async def answered() -> bool:
        status = await health_status(http, miner.url)
        if status is not None:
            seen.append(status)
        return status == 200

    await wait_until(answered, "the miner to become ready")
    assert seen[0] == 503
    assert seen[-1] == 200
    body = (await http.get(f"{miner.url}{HEALTH_PATH}")).json()
    assert body == {"status": "ready"}


async def test_received_line_survives_sigkill_mid_request(
    http: httpx.AsyncClient, tmp_path: Path, stopped_after: list[MinerProcess]
) -> None:
    """A pod killed while generating still leaves its 'received' line (what tests count)."""
    call_log = tmp_path / "calls.jsonl"
    miner = MinerProcess(
        free_port(), "--delay", "60", "--call-log", str(call_log), log=tmp_path / "m.log"
    )
    stopped_after.append(miner)
    await wait_healthy(http, miner.url)
    request = asyncio.create_task(generate(http, miner.url, 5))

    async def logged() -> bool:
        return len(read_call_log(call_log)) == 1

    await wait_until(logged, "the received line")
    miner.kill()
    with pytest.raises(httpx.HTTPError):
        await request
    assert [line["status"] for line in read_call_log(call_log)] == ["received"]


async def test_sigterm_exits_cleanly(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """SIGTERM shuts the server down with exit code 0."""
    miner = MinerProcess(free_port(), log=tmp_path / "m.log")
    try:
        await wait_healthy(http, miner.url)
    finally:
        assert miner.stop() == 0


async def test_one_request_at_a_time(
    http: httpx.AsyncClient, tmp_path: Path, stopped_after: list[MinerProcess]
) -> None:
    """Concurrent requests are served one after another (in_flight counts the queue)."""
    miner = MinerProcess(free_port(), "--delay", "0.3", log=tmp_path / "m.log")
    stopped_after.append(miner)
    await wait_healthy(http, miner.url)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(generate(http, miner.url, s) for s in (1, 2, 3)))
    assert [r.status_code for r in results] == [200, 200, 200]
    assert loop.time() - start >= 0.9  # 3 x 0.3 s, serialised by the lock


async def test_die_after_answers_then_exits_mid_generation(
    http: httpx.AsyncClient, tmp_path: Path, stopped_after: list[MinerProcess]
) -> None:
    """--die-after 1 (LOCAL_POD_DIES_AFTER): one answer, then the next request gets none and the
    process exits with DIED_EXIT_CODE, its 'received' line logged (a pod dying mid-run)."""
    call_log = tmp_path / "calls.jsonl"
    miner = MinerProcess(
        free_port(),
        *("--die-after", "1", "--delay", "0.2", "--call-log", str(call_log)),
        log=tmp_path / "m.log",
    )
    stopped_after.append(miner)
    await wait_healthy(http, miner.url)
    assert (await generate(http, miner.url, 1)).status_code == 200
    with pytest.raises(httpx.HTTPError):
        await generate(http, miner.url, 2)
    assert miner.process.wait(timeout=10) == DIED_EXIT_CODE
    assert [line["status"] for line in read_call_log(call_log)] == ["received", "ok", "received"]


def test_parse_args_rejects_bad_values() -> None:
    """The command line validates its numbers."""
    config = parse_args(["--port", "1", "--delay", "0.5", "--fail-rate", "0.25", "--variant", "2"])
    assert (config.delay, config.fail_rate, config.variant, config.startup) == (0.5, 0.25, 2, 0.0)
    assert config.die_after is None
    assert parse_args(["--port", "1", "--die-after", "3"]).die_after == 3
    for bad in (
        ["--fail-rate", "1.5"],
        ["--delay", "-1"],
        ["--variant", "-2"],
        ["--die-after", "-1"],
    ):
        with pytest.raises(SystemExit):
            parse_args(["--port", "1", *bad])
