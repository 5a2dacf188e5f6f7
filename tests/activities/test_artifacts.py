"""FileStore: content addressing, idempotent writes, path-escape rejection, records."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.audit import ArtifactResult, GenerateResult
from storage.files import ArtifactStoreError, FileStore


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "artifacts")


def test_put_bytes_is_content_addressed(store: FileStore) -> None:
    """A blob lands at blobs/<sha[:2]>/<sha><suffix> and its URI reads back the same bytes."""
    data = b"glTF some bytes"
    sha = hashlib.sha256(data).hexdigest()

    uri = store.put_bytes(data, ".glb")

    expected = store.root / "blobs" / sha[:2] / f"{sha}.glb"
    assert uri == expected.as_uri()
    assert uri.startswith("file:///")
    assert store.path(uri) == expected
    assert store.read_bytes(uri) == data
    assert store.sha256_of(uri) == sha


def test_put_bytes_is_idempotent(store: FileStore) -> None:
    """Storing the same bytes twice gives the same URI, one file and no temporary leftovers."""
    first = store.put_bytes(b"payload", ".png")
    mtime = store.path(first).stat().st_mtime_ns

    second = store.put_bytes(b"payload", ".png")

    assert first == second
    assert store.path(second).stat().st_mtime_ns == mtime
    files = [p for p in (store.root / "blobs").rglob("*") if p.is_file()]
    assert files == [store.path(first)]


def test_different_bytes_get_different_uris(store: FileStore) -> None:
    """Different content, different address; the suffix is part of the name only."""
    assert store.put_bytes(b"a", ".glb") != store.put_bytes(b"b", ".glb")
    assert store.put_bytes(b"a", "") != store.put_bytes(b"a", ".glb")


@pytest.mark.parametrize("suffix", ["glb", "../x", ".gl/b", ".a b", "." + "x" * 17])
def test_put_bytes_rejects_bad_suffixes(store: FileStore, suffix: str) -> None:
    """A suffix can never introduce a path separator or odd characters."""
    with pytest.raises(ArtifactStoreError):
        store.put_bytes(b"x", suffix)


def test_path_rejects_escapes(store: FileStore, tmp_path: Path) -> None:
    """URIs outside the root, via `..`, percent-encoding or other schemes are refused."""
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = store.root.as_posix()
    for uri in [
        outside.as_uri(),
        f"file://{root}/../secret.txt",
        f"file://{root}/blobs/%2E%2E/%2E%2E/secret.txt",
        f"file://{root}",
        "file://otherhost/etc/passwd",
        "http://example.com/a.glb",
        "/etc/passwd",
        f"file://{root}/blobs/x?y=1",
    ]:
        with pytest.raises(ArtifactStoreError):
            store.path(uri)


def test_path_rejects_symlink_escape(store: FileStore, tmp_path: Path) -> None:
    """A symlink inside the root that points outside does not open a way out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.bin").write_bytes(b"x")
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside)

    with pytest.raises(ArtifactStoreError):
        store.read_bytes((store.root / "link" / "f.bin").as_uri())


def test_sha256_of_hashes_non_blob_files(store: FileStore) -> None:
    """Files in the store that are not named by their hash are hashed for real."""
    path = store.root / "other" / "file.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"content")

    assert store.sha256_of(path.as_uri()) == hashlib.sha256(b"content").hexdigest()


def test_missing_blob_raises_file_not_found(store: FileStore) -> None:
    """A well-formed URI inside the root without a file behind it is FileNotFoundError."""
    sha = "ab" * 32
    uri = (store.root / "blobs" / "ab" / f"{sha}.glb").as_uri()
    with pytest.raises(FileNotFoundError):
        store.read_bytes(uri)
    with pytest.raises(FileNotFoundError):
        store.sha256_of(uri)


def test_records_round_trip_with_url_keys(store: FileStore) -> None:
    """Any key (URLs with slashes, dots, queries) maps to a hashed file inside the root."""
    key = "https://cdn.example.com/../../etc/passwd?x=/../y#frag"
    record = ArtifactResult(uri="file:///x/y.glb", size=12)

    assert store.get_record("fetch", key, ArtifactResult) is None
    store.put_record("fetch", key, record)

    assert store.get_record("fetch", key, ArtifactResult) == record
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert files[0].is_relative_to(store.root / "records" / "fetch")
    assert files[0].name == hashlib.sha256(key.encode()).hexdigest() + ".json"


def test_records_are_separated_by_namespace_and_replaced(store: FileStore) -> None:
    """Namespaces do not collide, and a second put replaces the first."""
    first = GenerateResult(glb_uri="file:///a.glb", size=1, generation_time=1.5)
    second = GenerateResult(glb_uri="file:///b.glb", size=2, generation_time=2.5)
    store.put_record("generate", "k", first)
    store.put_record("other", "k", second)
    assert store.get_record("generate", "k", GenerateResult) == first

    store.put_record("generate", "k", second)
    assert store.get_record("generate", "k", GenerateResult) == second


@pytest.mark.parametrize("namespace", ["", "../x", "a/b", ".hidden", "x" * 65])
def test_records_reject_bad_namespaces(store: FileStore, namespace: str) -> None:
    """The namespace is the one caller-chosen path part, so it is strictly validated."""
    with pytest.raises(ArtifactStoreError):
        store.put_record(namespace, "k", ArtifactResult(uri="file:///a", size=1))


def test_trim_keeps_the_most_recently_used_blobs(tmp_path: Path) -> None:
    """The S3 store's local cache is bounded: the least recently used blobs go first, and
    records and published copies are never trimmed."""
    import os

    store = FileStore(tmp_path)
    uris = [store.put_bytes(bytes([i]) * 1000, ".glb") for i in range(4)]
    for age, uri in enumerate(uris):  # uris[0] is the oldest
        os.utime(store.path(uri), (1000 + age, 1000 + age))
    store.touch(uris[0])  # used just now
    store.publish(uris[1], "rounds/1/h/generated/s.glb")
    store.put_record("generate", "k", ArtifactResult(uri=uris[1], size=1000))
    assert store.trim(2000) == 2000
    kept = [uri for uri in uris if store.path(uri).is_file()]
    assert kept == [uris[0], uris[3]]
    assert (store.public_root / "rounds/1/h/generated/s.glb").read_bytes() == bytes([1]) * 1000
    assert store.get_record("generate", "k", ArtifactResult) is not None
    assert store.trim(10**9) == 0
