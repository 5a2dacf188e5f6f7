"""The miner HTTP contract: paths, form fields and content types every miner image serves.

Shared by the reference miner (`miner/`) and every client that calls a miner (health probes in
`activities/pods.py`, generation calls). Plain constants only: `miner/` imports this module and
nothing else from the project, so it must stay free of pydantic, temporalio and I/O.
"""

from __future__ import annotations

from enum import StrEnum

HEALTH_PATH = "/health"
"""GET -> 200 once the miner is ready (models loaded); anything else means not ready yet."""

GENERATE_PATH = "/generate"
"""POST multipart (`PROMPT_IMAGE_FIELD` file + `SEED_FIELD` form field) -> GLB bytes."""

STATS_PATH = "/stats"
"""GET -> JSON counters (reference miner only; real miner images need not serve it)."""

PROMPT_IMAGE_FIELD = "prompt_image_file"
"""Multipart file field carrying the prompt PNG."""

SEED_FIELD = "seed"
"""Multipart form field carrying the round seed as a decimal integer."""

GLB_CONTENT_TYPE = "model/gltf-binary"
"""Content-Type of a successful `/generate` response."""

HEALTH_READY_STATUS = "ready"
"""`status` value of the reference miner's 200 `/health` JSON body."""


class CallLogStatus(StrEnum):
    """`status` of a line in the reference miner's call log (one JSON object per line).

    `RECEIVED` is written once per well-formed `/generate` request as soon as it arrives (before
    queueing or generating), so it survives the pod being killed mid-request: count these to know
    how many generation calls reached any pod. The other values are written when answered.
    """

    RECEIVED = "received"
    OK = "ok"
    FAILED = "failed"
    BAD_REQUEST = "bad_request"
