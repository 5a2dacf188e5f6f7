"""The one way this project writes a file that others may read at any moment.

`write_atomic` writes to a temporary file in the target's directory, flushes it to disk and
publishes it with `os.replace`: a reader sees the old file or the new one, never a half-written
one, and a crash mid-write leaves only a stray `.<name>.*.tmp` file. Used by the artifact store
(`activities.artifacts`) and the local provider's pod registry (`providers.local`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` via a temporary file in the same directory and `os.replace`.

    Creates the missing parent directories. The temporary file is removed on any failure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).replace(target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
