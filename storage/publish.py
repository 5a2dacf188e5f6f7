"""Publishing: generated.json's store URIs become public URLs right before the file is committed.

Why here, at write time, and not per attempt as upstream: a prompt's best result is chosen
among attempts after they finish, and upstream uploads every attempt to the same key, so its
public GLB can be a later, slower attempt than the one generated.json describes. Publishing the
chosen entry as it is committed keeps the public file and the entry the same, and a failed
upload fails only the write (retried by Temporal), never a generation charged to the miner.
Entries that already hold a public URL (a resumed run's seeded results) are left as they are.
"""

from __future__ import annotations

import asyncio
import re

from models.audit import JsonFileWrite
from storage.base import ArtifactStore

GENERATED_PATH_RE = re.compile(r"^rounds/(\d+)/([^/]+)/generated\.json$")
PUBLISH_CONCURRENCY = 8
_FIELDS = ("glb", "png")


def public_key(template: str, round_number: int, hotkey: str, stem: str, ext: str) -> str:
    """The object key of one artifact (STORAGE_PATH_TEMPLATE, as upstream formats it)."""
    return template.format(round=round_number, hotkey=hotkey, filename=f"{stem}.{ext}")


async def publish_generated(
    store: ArtifactStore, template: str, files: list[JsonFileWrite]
) -> list[JsonFileWrite]:
    """`files` with every store URI in a generated.json replaced by its public URL."""
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)
    result: list[JsonFileWrite] = []
    for write in files:
        match = GENERATED_PATH_RE.match(write.path)
        if match is None or not isinstance(write.value, dict):
            result.append(write)
            continue
        round_number, hotkey = int(match.group(1)), match.group(2)
        value: dict[str, object] = {
            stem: dict(entry) if isinstance(entry, dict) else entry
            for stem, entry in write.value.items()
        }

        jobs = [
            _publish_one(
                store,
                gate,
                entry,
                field,
                uri,
                public_key(template, round_number, hotkey, stem, field),
            )
            for stem, entry in value.items()
            if isinstance(entry, dict)
            for field in _FIELDS
            if isinstance(uri := entry.get(field), str) and store.owns(uri)
        ]
        await asyncio.gather(*jobs)
        result.append(write.model_copy(update={"value": value}) if jobs else write)
    return result


async def _publish_one(
    store: ArtifactStore,
    gate: asyncio.Semaphore,
    entry: dict[str, object],
    field: str,
    uri: str,
    key: str,
) -> None:
    async with gate:
        entry[field] = await store.publish(uri, key)
