"""The preview recipe: a GLB rendered to the 2x2 preview PNG exactly as upstream c263c11's
render-service does (REFERENCE.md sec. 13: the GLB as it is, one mesh within +-0.6, pyrender, 4
views at azimuths 24/120/216/312 deg with the camera 15 deg above, radius 2.0, yfov 49.1 deg, a
directional light of 6.0 beside the camera, 2x supersampling, 518 px views in a 2x2 grid with a
5 px black gap; the golden test compares with an image made by upstream's own code).

No torch here: the `gpu` queue's activities (activities/scoring.py), `starter.py preview` and the
demo's submission previews (`python -m activities.preview`) all render with this code.

    python -m activities.preview OUT_DIR GLB...     # OUT_DIR/{GLB stem}.png for each GLB
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trimesh
from PIL import Image

# --- preview recipe (REFERENCE.md); change RENDER_VERSION with any of these ----------------------

VIEW_SIZE = 518
"""Edge of one view in the grid, pixels."""
SUPERSAMPLING = 2
"""Views are rendered at SUPERSAMPLING x VIEW_SIZE and downsampled with LANCZOS."""
GRID_GAP = 5
"""Black gap between the views of the 2x2 grid, pixels."""
GRID_SIZE = 2 * VIEW_SIZE + GRID_GAP
"""Edge of the preview PNG (1041)."""
CAMERA_RADIUS = 2.0
CAMERA_YFOV_DEGREES = 49.1
CAMERA_ELEVATION_DEGREES = -15.0
"""Upstream's phi; its spherical_to_cartesian negates it, so the camera sits 15 deg *above*."""
CAMERA_AZIMUTHS_DEGREES = (24.0, 120.0, 216.0, 312.0)
"""np.linspace(0, 360, 16)[[1, 5, 9, 13]]; grid order top-left, top-right, bottom-left, right."""
AMBIENT_LIGHT = 0.3
LIGHT_INTENSITY = 6.0
"""A white directional light, re-posed per view to look at the origin from camera + (1, 1, 0)."""
LIGHT_OFFSET = (1.0, 1.0, 0.0)
MAX_COORDINATE = 0.6
"""Every vertex coordinate must lie in [-0.6, 0.6] (upstream: "unit cube size constraint")."""
RENDER_VERSION = "preview-v2-upstream-c263c11"
"""Part of the preview cache key: bump it whenever the recipe above changes."""

_GL_LINEAR = 0x2601  # OpenGL GL_LINEAR: sample textures without mipmaps, like upstream.


# --- rendering ------------------------------------------------------------------------------------


class MeshLoadError(ValueError):
    """A GLB upstream's render service refuses (its message is the one-line reason)."""


def load_mesh_as_upstream(glb: bytes) -> trimesh.Trimesh:
    """Load a GLB as upstream's render service does: exactly one mesh, within +-0.6, as it is.

    Node transforms are ignored (the geometry is taken from the scene's table) and nothing is
    centred or scaled: a mesh outside the spec is a failed prompt, never normalised into a pass.

    Raises:
        MeshLoadError: With upstream's reason where it has one (`GLB file contains {n} objects
            (expected 1)`, `GLB file contains non-mesh object: {type}`, `Model exceeds unit cube
            size constraint`), else why the bytes cannot be rendered.
    """
    try:
        loaded = trimesh.load(io.BytesIO(glb), file_type="glb", force=None)
    # trimesh raises many exception types for malformed files; all mean "cannot render".
    except Exception as exc:
        raise MeshLoadError(f"GLB cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, trimesh.Scene):
        geometries = list(loaded.geometry.values())
        if len(geometries) != 1:
            raise MeshLoadError(f"GLB file contains {len(geometries)} objects (expected 1)")
        loaded = geometries[0]
        if not isinstance(loaded, trimesh.Trimesh):
            raise MeshLoadError(f"GLB file contains non-mesh object: {type(loaded).__name__}")
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshLoadError(f"Unexpected GLB content type: {type(loaded).__name__}")
    if len(loaded.faces) == 0:
        raise MeshLoadError("GLB has no triangles")
    lower, upper = loaded.bounds
    if not (float(upper.max()) <= MAX_COORDINATE and float(lower.min()) >= -MAX_COORDINATE):
        raise MeshLoadError("Model exceeds unit cube size constraint")
    return loaded


def camera_position(
    azimuth_degrees: float, elevation_degrees: float, radius: float
) -> npt.NDArray[np.float64]:
    """Upstream's spherical_to_cartesian: (r cos(el) sin(az), -r sin(el), r cos(el) cos(az))."""
    azimuth = math.radians(azimuth_degrees)
    elevation = math.radians(elevation_degrees)
    return np.array(
        [
            radius * math.cos(elevation) * math.sin(azimuth),
            -radius * math.sin(elevation),
            radius * math.cos(elevation) * math.cos(azimuth),
        ]
    )


def look_at(eye: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Upstream's look_at: camera-to-world pose at `eye` looking at the origin, +Y up."""
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0] = right
    pose[:3, 1] = up
    pose[:3, 2] = -forward
    pose[:3, 3] = eye
    return pose


def _import_pyrender() -> Any:
    """Import pyrender headless (EGL unless PYOPENGL_PLATFORM says otherwise)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    # pyrender 0.1.45 still reads np.infty, which numpy 2 removed.
    vars(np).setdefault("infty", np.inf)
    import pyrender

    return pyrender


class PreviewRenderer:
    """Renders normalised meshes to the preview PNG on one dedicated OpenGL thread.

    Owns: a single-thread executor and the one `pyrender.OffscreenRenderer` created on it (an
    OpenGL context is bound to the thread that made it), reused for every render. Callers await
    `render`; the event loop never blocks on OpenGL.
    """

    def __init__(self) -> None:
        """Create the render thread; the OpenGL context is made lazily on it."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview-render")
        self._pyrender: Any = None
        self._offscreen: Any = None
        self._closed = False

    async def warm_up(self) -> None:
        """Create the OpenGL context now."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_context)

    async def render(self, mesh: trimesh.Trimesh) -> bytes:
        """The 1041x1041 RGB preview PNG of a mesh (see module constants)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.render_sync, mesh)

    def render_blocking(self, mesh: trimesh.Trimesh) -> bytes:
        """`render` for synchronous callers (tools, the demo's submission previews)."""
        return self._executor.submit(self.render_sync, mesh).result()

    def close(self) -> None:
        """Delete the OpenGL context (on its thread) and stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._release).result()
        self._executor.shutdown(wait=True)

    def render_sync(self, mesh: trimesh.Trimesh) -> bytes:
        """Render on the calling thread; only ever called on the render thread."""
        self._ensure_context()
        pyrender = self._pyrender
        pr_mesh = pyrender.Mesh.from_trimesh(mesh, smooth=True)
        for primitive in pr_mesh.primitives:
            if primitive.material is not None:
                primitive.material.doubleSided = False  # upstream's value (its comment says True)
                _disable_mipmaps(primitive.material)
        scene = pyrender.Scene(bg_color=[255, 255, 255, 0], ambient_light=[AMBIENT_LIGHT] * 3)
        scene.add(pr_mesh)
        camera_node = scene.add(pyrender.PerspectiveCamera(yfov=math.radians(CAMERA_YFOV_DEGREES)))
        light = pyrender.DirectionalLight(color=[255, 255, 255], intensity=LIGHT_INTENSITY)
        light_node = scene.add(light)

        grid = Image.new("RGB", (GRID_SIZE, GRID_SIZE), color="black")
        for index, azimuth in enumerate(CAMERA_AZIMUTHS_DEGREES):
            eye = camera_position(azimuth, CAMERA_ELEVATION_DEGREES, CAMERA_RADIUS)
            scene.set_pose(camera_node, look_at(eye))
            scene.set_pose(light_node, look_at(eye + np.array(LIGHT_OFFSET)))
            color, _depth = self._offscreen.render(scene)
            view = Image.fromarray(color).resize(
                (VIEW_SIZE, VIEW_SIZE), resample=Image.Resampling.LANCZOS
            )
            row, column = divmod(index, 2)
            grid.paste(view, (column * (VIEW_SIZE + GRID_GAP), row * (VIEW_SIZE + GRID_GAP)))
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        return buffer.getvalue()

    def _ensure_context(self) -> None:
        if self._offscreen is None:
            self._pyrender = _import_pyrender()
            size = VIEW_SIZE * SUPERSAMPLING
            self._offscreen = self._pyrender.OffscreenRenderer(size, size)

    def _release(self) -> None:
        if self._offscreen is not None:
            self._offscreen.delete()
            self._offscreen = None


def _disable_mipmaps(material: Any) -> None:
    """Sample textures linearly without mipmaps (upstream does the same)."""
    for attribute in (
        "baseColorTexture",
        "metallicRoughnessTexture",
        "normalTexture",
        "occlusionTexture",
        "emissiveTexture",
    ):
        texture = getattr(material, attribute, None)
        sampler = getattr(texture, "sampler", None)
        if sampler is not None:
            sampler.minFilter = _GL_LINEAR
            sampler.magFilter = _GL_LINEAR


def main(argv: list[str] | None = None) -> int:
    """Render each GLB to OUT_DIR/{stem}.png with one renderer; exit 1 if one is refused."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m activities.preview OUT_DIR GLB...", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    renderer = PreviewRenderer()
    try:
        for name in args[1:]:
            glb = Path(name)
            try:
                mesh = load_mesh_as_upstream(glb.read_bytes())
            except MeshLoadError as e:
                print(f"refused: {glb}: {e}", file=sys.stderr)
                return 1
            (out_dir / f"{glb.stem}.png").write_bytes(renderer.render_blocking(mesh))
    finally:
        renderer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
