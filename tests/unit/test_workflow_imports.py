"""Workflow code stays deterministic and light: no torch, rendering, HTTP or provider imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["torch", "transformers", "pyrender", "trimesh", "httpx", "git", "providers"]


def test_importing_workflows_pulls_in_no_io_or_gpu_library() -> None:
    """`import workflows` (what the sandbox re-imports) loads none of the forbidden modules."""
    code = "import json, sys, workflows; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    assert not [name for name in FORBIDDEN if name in loaded]
