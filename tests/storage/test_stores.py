"""The artifact stores against real servers: moto's S3 server on loopback (two hosts' stores
sharing one bucket), the local store's file server, and publishing at write time."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.competition_repo import CompetitionRepoActivities
from competition.repo import CompetitionRepo
from models.audit import JsonFileWrite, WriteFilesInput
from storage import ArtifactUnavailableError, LocalArtifactStore, S3ArtifactStore
from storage.files import ArtifactStoreError
from storage.http import serve_public
from storage.publish import publish_generated
from testing.s3_server import REGION, S3Server
from tests.helpers import free_port, make_settings


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def s3_store(server: S3Server, cache: Path, *, secret: str | None = None, patience: float = 0.0):
    return S3ArtifactStore(
        endpoint=server.endpoint,
        bucket=server.bucket,
        access_key_id=server.access_key_id,
        secret_access_key=secret or server.secret_access_key,
        region=REGION,
        public_url=server.public_url,
        cache_dir=cache,
        cache_bytes=10**9,
        object_acl="public-read",
        patience_seconds=patience,
    )


@pytest_asyncio.fixture
async def hosts(
    s3: S3Server, tmp_path: Path
) -> AsyncIterator[tuple[S3ArtifactStore, S3ArtifactStore]]:
    """Two hosts' stores: one bucket, separate caches (nothing else shared)."""
    a, b = s3_store(s3, tmp_path / "host-a"), s3_store(s3, tmp_path / "host-b")
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_a_blob_put_on_one_host_is_read_on_another(
    hosts: tuple[S3ArtifactStore, S3ArtifactStore], s3: S3Server
) -> None:
    """Payload URIs are `s3://` keys; another host downloads, checks and caches the bytes."""
    a, b = hosts
    data = b"glTF" + b"\x01" * 1000
    digest = hashlib.sha256(data).hexdigest()
    uri = await a.put_bytes(data, ".glb")
    assert uri == f"s3://{s3.bucket}/orchestrator/blobs/{digest[:2]}/{digest}.glb"
    assert await a.put_bytes(data, ".glb") == uri  # idempotent
    assert a.owns(uri) and b.owns(uri)
    assert not b.owns("https://cdn.example/rounds/1/x.glb")
    assert not list(b.root.rglob("*.glb"))
    assert await b.exists(uri)
    assert await b.read_bytes(uri) == data
    assert [p.name for p in b.root.rglob("*.glb")] == [f"{digest}.glb"]  # cached
    assert await b.sha256_of(uri) == digest


async def test_records_are_shared_by_hosts(hosts: tuple[S3ArtifactStore, S3ArtifactStore]) -> None:
    """An idempotency record written by one host is found by another (no second generation)."""
    from models.audit import ArtifactResult

    a, b = hosts
    record = ArtifactResult(uri="s3://404-gen/orchestrator/blobs/x", size=3)
    assert await b.get_record("generate", "audit-1/a1", ArtifactResult) is None
    await a.put_record("generate", "audit-1/a1", record)
    assert await b.get_record("generate", "audit-1/a1", ArtifactResult) == record


async def test_publish_serves_the_blob_at_the_cdn_url_and_overwrites(
    hosts: tuple[S3ArtifactStore, S3ArtifactStore], s3: S3Server
) -> None:
    """publish -> CDN_URL/key answers with the bytes; publishing again replaces them."""
    a, _ = hosts
    key = "rounds/7/5Hot/generated/stem-1.glb"
    first = await a.put_bytes(b"first mesh", ".glb")
    url = await a.publish(first, key)
    assert url == f"{s3.public_url}/{key}"
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == b"first mesh"
        assert response.headers["content-type"] == "application/octet-stream"
        await a.publish(await a.put_bytes(b"second mesh", ".glb"), key)
        assert (await http.get(url)).content == b"second mesh"


async def test_a_missing_object_is_file_not_found(
    hosts: tuple[S3ArtifactStore, S3ArtifactStore], s3: S3Server
) -> None:
    a, _ = hosts
    uri = f"s3://{s3.bucket}/orchestrator/blobs/ab/{'ab' * 32}.glb"
    assert not await a.exists(uri)
    with pytest.raises(FileNotFoundError, match="ab" * 32):
        await a.read_bytes(uri)
    with pytest.raises(ArtifactStoreError, match="other-bucket"):
        await a.read_bytes("s3://other-bucket/orchestrator/blobs/x.glb")
    with pytest.raises(ArtifactStoreError, match="invalid public artifact key"):
        await a.publish(await a.put_bytes(b"x", ".glb"), "rounds/../../etc/passwd")


async def test_wrong_credentials_fail_retryably_and_never_show_the_secret(tmp_path: Path) -> None:
    """A server that checks signatures refuses a wrong secret: ArtifactUnavailableError naming
    endpoint, bucket and the S3 error code, without the secret; the right key pair works."""
    with S3Server(auth=True) as server:
        wrong = "wrong-secret-value-0123456789"
        bad = s3_store(server, tmp_path / "bad", secret=wrong)
        good = s3_store(server, tmp_path / "good")
        try:
            with pytest.raises(ArtifactUnavailableError) as info:
                await bad.put_bytes(b"mesh", ".glb")
            message = str(info.value)
            assert server.endpoint in message and server.bucket in message
            assert "403" in message and "R2_SECRET_ACCESS_KEY" in message
            assert wrong not in message and server.secret_access_key not in message
            uri = await good.put_bytes(b"mesh", ".glb")
            assert await good.read_bytes(uri) == b"mesh"
        finally:
            await bad.aclose()
            await good.aclose()


async def test_an_endpoint_down_for_a_while_is_waited_for(tmp_path: Path) -> None:
    """A write retries while the endpoint is down and lands once it is back; with no patience
    left it fails retryably (Temporal retries the activity), naming the endpoint."""
    server = S3Server(port=free_port())
    impatient = s3_store(server, tmp_path / "impatient", patience=0.0)
    with pytest.raises(ArtifactUnavailableError, match=server.endpoint):
        await impatient.put_record("generate", "k", _record())
    await impatient.aclose()

    store = s3_store(server, tmp_path / "patient", patience=120.0)
    retrying = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                retrying.set()

    handler = Seen()
    logging.getLogger("storage.s3").addHandler(handler)
    try:
        write = asyncio.create_task(store.put_record("generate", "k", _record()))
        await asyncio.wait_for(retrying.wait(), 60)
        assert not write.done()
        await asyncio.to_thread(server.start)  # the bucket is back
        await asyncio.wait_for(write, 90)
        assert await store.get_record("generate", "k", type(_record())) == _record()
    finally:
        logging.getLogger("storage.s3").removeHandler(handler)
        await store.aclose()
        server.stop()


def _record():
    from models.audit import ArtifactResult

    return ArtifactResult(uri="s3://404-gen/orchestrator/blobs/x", size=1)


# --- the local store ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalArtifactStore]:
    server = await serve_public(tmp_path / "artifacts" / "public", "http://127.0.0.1:0")
    yield LocalArtifactStore(tmp_path / "artifacts", server.url)
    await server.close()


async def test_the_local_store_publishes_http_urls_that_answer(local: LocalArtifactStore) -> None:
    """The embedded default: published copies are served over loopback HTTP, never file://."""
    uri = await local.put_bytes(b"local mesh", ".glb")
    assert uri.startswith("file://") and local.owns(uri)
    url = await local.publish(uri, "rounds/3/5Hot/generated/s1.glb")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/rounds/3/5Hot/generated/s1.glb")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"local mesh"
        assert (await http.get(url.rsplit("/", 1)[0] + "/")).status_code in (403, 404)  # no index
        await local.publish(
            await local.put_bytes(b"better mesh", ".glb"), "rounds/3/5Hot/generated/s1.glb"
        )
        assert (await http.get(url)).content == b"better mesh"


async def test_a_second_server_on_a_taken_port_leaves_serving_to_the_first(tmp_path: Path) -> None:
    first = await serve_public(tmp_path / "a", "http://127.0.0.1:0")
    second = await serve_public(tmp_path / "b", first.url)
    assert second.runner is None and second.url == first.url
    await first.close()


async def test_publish_generated_replaces_only_store_uris(local: LocalArtifactStore) -> None:
    """Store URIs in a generated.json become public URLs under STORAGE_PATH_TEMPLATE; public
    URLs (seeded from a resumed run), nulls and other files are left as they are."""
    glb = await local.put_bytes(b"mesh", ".glb")
    png = await local.put_bytes(b"png", ".png")
    seeded = "https://subnet404.xyz/rounds/4/5Hot/generated/old.glb"
    files = [
        JsonFileWrite(
            path="rounds/4/5Hot/generated.json",
            value={
                "new": {"glb": glb, "png": png, "distance": 0.0},
                "old": {"glb": seeded, "png": None},
            },
        ),
        JsonFileWrite(path="rounds/4/5Hot/pod_stats.json", value={"glb": glb}),
    ]
    published = await publish_generated(local, "x/{round}/{hotkey}/{filename}", files)
    value = published[0].value
    assert isinstance(value, dict)
    assert value["new"]["glb"] == f"{local.public_url}/x/4/5Hot/new.glb"
    assert value["new"]["png"] == f"{local.public_url}/x/4/5Hot/new.png"
    assert value["old"] == {"glb": seeded, "png": None}
    assert published[1] == files[1]
    assert files[0].value["new"]["glb"] == glb  # type: ignore[index]  # input untouched


async def test_write_files_commits_public_urls(local: LocalArtifactStore, tmp_path: Path) -> None:
    """write_files publishes generated.json's artifacts first, so the commit holds http URLs."""
    import json
    import subprocess

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(remote), str(seed)], check=True)
    (seed / "README").write_text("x")
    for args in (
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"],
        ["push", "-q", "origin", "main"],
    ):
        subprocess.run(["git", *args], cwd=seed, check=True)
    repo = CompetitionRepo(str(remote), "main", tmp_path / "work")
    acts = CompetitionRepoActivities(repo, local)
    glb = await local.put_bytes(b"mesh", ".glb")
    await ActivityEnvironment().run(
        acts.write_files,
        WriteFilesInput(
            message="Update generated",
            files=[
                JsonFileWrite(
                    path="rounds/2/5Hot/generated.json", value={"s": {"glb": glb, "png": None}}
                )
            ],
        ),
    )
    text = subprocess.run(
        ["git", "show", "main:rounds/2/5Hot/generated.json"],
        cwd=remote,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    url = json.loads(text)["s"]["glb"]
    assert url == f"{local.public_url}/rounds/2/5Hot/generated/s.glb"
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"mesh"


def test_settings_pick_the_store_and_name_what_is_missing() -> None:
    assert not make_settings().uses_s3
    s3 = make_settings(
        R2_ENDPOINT="https://acct.r2.cloudflarestorage.com",
        R2_ACCESS_KEY_ID="id",
        R2_SECRET_ACCESS_KEY="very-secret",
        CDN_URL="https://cdn.example/",
    )
    assert s3.uses_s3 and s3.cdn_url == "https://cdn.example"
    assert "very-secret" not in repr(s3)
    with pytest.raises(ValueError, match="R2_ENDPOINT, R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"):
        make_settings(ARTIFACT_STORE="s3")
    with pytest.raises(ValueError, match="filename"):
        make_settings(STORAGE_PATH_TEMPLATE="rounds/{round}/{stem}")
