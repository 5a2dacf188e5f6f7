"""GPU-queue activities: render a GLB to the 2x2 preview PNG, and DINOv3 distance of two previews.

Owns the preview recipe (REFERENCE.md "DINOv3 distance and previews": pyrender, 4 views at
azimuths 24/120/216/312 deg, elevation -15 deg, radius 2.0, yfov 49.1 deg, 2x supersampling,
518 px views in a 2x2 grid with a 5 px white gap), the DINOv3 embedding and the distance. It is the
only module that imports torch, transformers and pyrender; it runs on the `gpu` task queue and
workflows never import it. Does not own downloads (activities/generation.py) or the decision
what distance counts as a mismatch (the audit policy).

Both sides of a comparison are rendered here from GLBs with the same code (DESIGN.md): a
miner-supplied PNG is never trusted. Previews are cached by the GLB's sha256 in the store's
record store, embeddings by the PNG's sha256 in memory, so a retried activity or a second audit
of the same file costs nothing.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import trimesh
from PIL import Image
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.artifacts import ArtifactStore, ArtifactStoreError
from models.audit import ArtifactResult, RenderPreviewInput, ScoreDistanceInput, ScoreDistanceResult
from models.errors import ErrorType

# --- preview recipe (REFERENCE.md); change RENDER_VERSION with any of these ----------------------

VIEW_SIZE = 518
"""Edge of one view in the grid, pixels."""
SUPERSAMPLING = 2
"""Views are rendered at SUPERSAMPLING x VIEW_SIZE and downsampled with LANCZOS."""
GRID_GAP = 5
"""White gap between the views of the 2x2 grid, pixels."""
GRID_SIZE = 2 * VIEW_SIZE + GRID_GAP
"""Edge of the preview PNG (1041)."""
CAMERA_RADIUS = 2.0
CAMERA_YFOV_DEGREES = 49.1
CAMERA_ELEVATION_DEGREES = -15.0
"""Literal reading of upstream's -15: the camera sits 15 deg below the horizontal plane (y up)."""
CAMERA_AZIMUTHS_DEGREES = (24.0, 120.0, 216.0, 312.0)
"""Grid order: top-left, top-right, bottom-left, bottom-right."""
AMBIENT_LIGHT = 0.3
LIGHT_INTENSITY = 3.0
"""A white directional light that travels with the camera."""
RENDER_VERSION = "preview-v1"
"""Part of the preview cache key: bump it whenever the recipe above changes."""

# --- embedding ------------------------------------------------------------------------------------

EMBED_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
EMBEDDING_CACHE_ENTRIES = 4096
"""In-memory embeddings kept per process (a 384-float vector each for ViT-S)."""

_RECORD_PREVIEW = "preview"
_GL_LINEAR = 0x2601  # OpenGL GL_LINEAR: sample textures without mipmaps, like upstream.

Embedding = npt.NDArray[np.float64]


class ScoringActivities:
    """`render_preview` and `score_distance`, on the gpu queue.

    Owns: one `PreviewRenderer` (a dedicated OpenGL thread) and one `DinoEmbedder` (the model,
    loaded once per process), plus reading and writing previews in the artifact store. Does not
    own the artifact store's lifetime or any threshold.
    """

    def __init__(
        self,
        store: ArtifactStore,
        model_source: str,
        device: str | None = None,
        *,
        renderer: PreviewRenderer | None = None,
    ) -> None:
        """Bind the activities; nothing heavy happens until first use (or `warm_up`).

        Args:
            store: Artifact store holding the GLBs and receiving the previews.
            model_source: DINOV3_MODEL: a hub id or a local directory from `save_pretrained`.
            device: torch device; None picks "cuda" when available, else "cpu".
            renderer: The preview renderer to use (default: a new one owned by this instance).
        """
        self._store = store
        self._renderer = renderer or PreviewRenderer()
        self._embedder = DinoEmbedder(model_source, device)

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [self.render_preview, self.score_distance]

    async def warm_up(self) -> None:
        """Load the model and create the OpenGL context now (worker start-up), not on first use.

        Raises:
            ApplicationError: SCORING_MODEL_UNAVAILABLE if DINOV3_MODEL cannot be loaded, so a
                misconfigured worker fails at start instead of polling the queue.
        """
        await asyncio.to_thread(self._embedder.load)
        await self._renderer.warm_up()

    def close(self) -> None:
        """Close the renderer (also an injected one): releases OpenGL, stops its thread."""
        self._renderer.close()

    @activity.defn(name="render_preview")
    async def render_preview(self, input: RenderPreviewInput) -> ArtifactResult:
        """Render a stored GLB to the 2x2 preview PNG and store it.

        Idempotent and cached: the PNG for a GLB is recorded under the GLB's sha256 (and the
        recipe version), so a retry or a second audit of the same bytes returns the record.
        Rendering is deterministic, so a re-render yields the same blob anyway.

        Raises:
            ApplicationError: Non-retryable RENDER_FAILED (naming the URI) if the GLB is missing,
                cannot be loaded, or has no triangles; non-retryable INVALID_INPUT if the URI is
                outside the artifact store.
        """
        uri = input.glb_uri
        glb_sha = await asyncio.to_thread(self._sha256, uri)
        key = f"{RENDER_VERSION}:{glb_sha}"
        cached = await asyncio.to_thread(self._cached_preview, key)
        if cached is not None:
            return cached

        started = time.monotonic()
        glb = await asyncio.to_thread(self._store.read_bytes, uri)
        try:
            mesh = await asyncio.to_thread(load_normalized_mesh, glb)
        except MeshLoadError as exc:
            raise ApplicationError(
                f"cannot render {uri}: {exc}", type=ErrorType.RENDER_FAILED, non_retryable=True
            ) from exc
        png = await self._renderer.render(mesh)
        png_uri = await asyncio.to_thread(self._store.put_bytes, png, ".png")
        result = ArtifactResult(uri=png_uri, size=len(png))
        await asyncio.to_thread(self._store.put_record, _RECORD_PREVIEW, key, result)
        activity.logger.info("rendered %s in %.2fs", uri, time.monotonic() - started)
        return result

    @activity.defn(name="score_distance")
    async def score_distance(self, input: ScoreDistanceInput) -> ScoreDistanceResult:
        """DINOv3 distance (1 - cosine similarity of L2-normalised CLS embeddings) of two PNGs.

        Pure function of the two files' bytes; embeddings are cached by PNG sha256.

        Raises:
            ApplicationError: Non-retryable SCORING_MODEL_UNAVAILABLE (naming DINOV3_MODEL) if
                the model cannot be loaded; non-retryable RENDER_FAILED (naming the URI) if a PNG
                is missing or not an image; non-retryable INVALID_INPUT for URIs outside the store.
        """
        sha_a = await asyncio.to_thread(self._sha256, input.png_a_uri)
        sha_b = await asyncio.to_thread(self._sha256, input.png_b_uri)
        wanted = {sha_a: input.png_a_uri, sha_b: input.png_b_uri}
        embeddings = await asyncio.to_thread(self._embedder.embed, wanted, self._store.read_bytes)
        distance = cosine_distance(embeddings[sha_a], embeddings[sha_b])
        return ScoreDistanceResult(distance=distance)

    def _sha256(self, uri: str) -> str:
        """sha256 of a stored file, mapping a bad or missing URI to a non-retryable error."""
        try:
            return self._store.sha256_of(uri)
        except ArtifactStoreError as exc:
            raise ApplicationError(
                str(exc), type=ErrorType.INVALID_INPUT, non_retryable=True
            ) from exc
        except FileNotFoundError as exc:
            raise ApplicationError(
                f"no such artifact: {uri}", type=ErrorType.RENDER_FAILED, non_retryable=True
            ) from exc

    def _cached_preview(self, key: str) -> ArtifactResult | None:
        cached = self._store.get_record(_RECORD_PREVIEW, key, ArtifactResult)
        if cached is None or not self._store.path(cached.uri).is_file():
            return None
        return cached


# --- rendering ------------------------------------------------------------------------------------


class MeshLoadError(ValueError):
    """A GLB that cannot be rendered: unreadable, no geometry, no triangles, zero size."""


def load_normalized_mesh(glb: bytes) -> trimesh.Trimesh:
    """Load a GLB as one mesh, centred at the origin with its largest extent scaled to 1.

    All geometry of the scene is concatenated with its node transforms applied.

    Raises:
        MeshLoadError: The bytes are not a loadable GLB, or there is nothing to render.
    """
    try:
        scene = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene")
    # trimesh raises many exception types for malformed files; all mean "cannot render".
    except Exception as exc:
        raise MeshLoadError(f"GLB cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(scene, trimesh.Scene) or not scene.geometry:
        raise MeshLoadError("GLB has no geometry")
    mesh: trimesh.Trimesh = scene.to_mesh()
    if len(mesh.faces) == 0:
        raise MeshLoadError("GLB has no triangles")
    lower, upper = mesh.bounds
    extent = float(np.max(upper - lower))
    if not math.isfinite(extent) or extent <= 0.0:
        raise MeshLoadError(f"GLB has degenerate bounds (largest extent {extent})")
    normalize = np.eye(4) / extent
    normalize[:3, 3] = -(lower + upper) / (2.0 * extent)
    normalize[3, 3] = 1.0
    mesh.apply_transform(normalize)
    return mesh


def camera_pose(
    azimuth_degrees: float, elevation_degrees: float, radius: float
) -> npt.NDArray[np.float64]:
    """4x4 camera-to-world pose on a sphere around the origin, looking at the origin (y up).

    The camera sits at r * (cos(el) cos(az), sin(el), cos(el) sin(az)); OpenGL cameras look
    down their -z axis, so the pose's z column points from the origin to the camera.
    """
    azimuth = math.radians(azimuth_degrees)
    elevation = math.radians(elevation_degrees)
    eye = radius * np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.sin(azimuth),
        ]
    )
    backward = eye / np.linalg.norm(eye)
    right = np.cross(np.array([0.0, 1.0, 0.0]), backward)
    right /= np.linalg.norm(right)
    up = np.cross(backward, right)
    pose = np.eye(4)
    pose[:3, 0] = right
    pose[:3, 1] = up
    pose[:3, 2] = backward
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
        """The 1041x1041 RGB preview PNG of a normalised mesh (see module constants)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.render_sync, mesh)

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
            _disable_mipmaps(primitive.material)
        scene = pyrender.Scene(
            bg_color=np.array([1.0, 1.0, 1.0, 1.0]),
            ambient_light=np.full(3, AMBIENT_LIGHT),
        )
        scene.add(pr_mesh)
        camera = pyrender.PerspectiveCamera(yfov=math.radians(CAMERA_YFOV_DEGREES), aspectRatio=1.0)
        camera_node = scene.add(camera)
        # Float colour: pyrender passes an integer array to the shader as zeros (no light at all).
        light = pyrender.DirectionalLight(color=np.ones(3), intensity=LIGHT_INTENSITY)
        light_node = scene.add(light)

        grid = Image.new("RGB", (GRID_SIZE, GRID_SIZE), (255, 255, 255))
        for index, azimuth in enumerate(CAMERA_AZIMUTHS_DEGREES):
            pose = camera_pose(azimuth, CAMERA_ELEVATION_DEGREES, CAMERA_RADIUS)
            scene.set_pose(camera_node, pose)
            scene.set_pose(light_node, pose)
            color, _depth = self._offscreen.render(scene)
            view = Image.fromarray(np.ascontiguousarray(color[:, :, :3])).resize(
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


# --- embedding ------------------------------------------------------------------------------------


class DinoEmbedder:
    """DINOv3 CLS embeddings of PNG previews.

    Owns: the model (loaded once per process on first use, guarded by a lock), the device, and
    an in-memory LRU cache of embeddings by PNG sha256. All methods are synchronous and
    thread-safe; activities call them through `asyncio.to_thread`. Inference is serialised by
    the same lock.
    """

    def __init__(self, model_source: str, device: str | None = None) -> None:
        """Remember where the model comes from; nothing is loaded yet.

        Args:
            model_source: DINOV3_MODEL: hub id or a local `save_pretrained` directory.
            device: torch device; None picks "cuda" when available, else "cpu".
        """
        self._model_source = model_source
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._cache: OrderedDict[str, Embedding] = OrderedDict()

    def load(self) -> None:
        """Load the model now if it is not loaded yet.

        Raises:
            ApplicationError: Non-retryable SCORING_MODEL_UNAVAILABLE naming DINOV3_MODEL.
        """
        with self._lock:
            self._ensure_model()

    def embed(
        self, wanted: Mapping[str, str], read: Callable[[str], bytes]
    ) -> dict[str, Embedding]:
        """Embeddings for PNGs given as {sha256: uri}; only uncached ones are read and embedded.

        Args:
            wanted: sha256 of each PNG -> its URI (the URI names it in errors and is read).
            read: Reads a URI's bytes (the artifact store's `read_bytes`).

        Returns:
            {sha256: L2-normalised float64 embedding}.

        Raises:
            ApplicationError: SCORING_MODEL_UNAVAILABLE, or RENDER_FAILED for a PNG that is
                missing or not an image (both non-retryable).
        """
        with self._lock:
            result = {sha: self._cache[sha] for sha in wanted if sha in self._cache}
            missing = [(sha, uri) for sha, uri in wanted.items() if sha not in result]
            for sha in result:
                self._cache.move_to_end(sha)
            if not missing:
                return result
            model = self._ensure_model()
            batch = np.stack([_preprocess(_read_png(read, uri), uri) for _, uri in missing])
            pixels = torch.from_numpy(batch).to(self._device_name())
            with torch.no_grad():
                output = model(pixel_values=pixels).pooler_output
                vectors = torch.nn.functional.normalize(output.float(), dim=-1)
            array = vectors.cpu().numpy().astype(np.float64)
            for (sha, _), vector in zip(missing, array, strict=True):
                result[sha] = vector
                self._cache[sha] = vector
            while len(self._cache) > EMBEDDING_CACHE_ENTRIES:
                self._cache.popitem(last=False)
            return result

    def _device_name(self) -> str:
        if self._device is None:
            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    def _ensure_model(self) -> Any:
        """The loaded model (call with the lock held)."""
        if self._model is not None:
            return self._model
        source = self._model_source
        local = Path(source).expanduser()
        looks_local = source.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local / "config.json").is_file():
            raise ApplicationError(
                f"DINOV3_MODEL={source!r}: no model directory there (expected config.json)",
                type=ErrorType.SCORING_MODEL_UNAVAILABLE,
                non_retryable=True,
            )
        from transformers import DINOv3ViTModel

        try:
            model: Any = DINOv3ViTModel.from_pretrained(str(local) if looks_local else source)
        except (OSError, ValueError) as exc:
            raise ApplicationError(
                f"DINOV3_MODEL={source!r} cannot be loaded: {exc}",
                type=ErrorType.SCORING_MODEL_UNAVAILABLE,
                non_retryable=True,
            ) from exc
        model.to(self._device_name())
        self._model = model.eval()
        return self._model


def _read_png(read: Callable[[str], bytes], uri: str) -> bytes:
    try:
        return read(uri)
    except FileNotFoundError as exc:
        raise ApplicationError(
            f"no such preview: {uri}", type=ErrorType.RENDER_FAILED, non_retryable=True
        ) from exc


def _preprocess(png: bytes, uri: str) -> npt.NDArray[np.float32]:
    """PNG bytes -> normalised CHW float32 array (RGB, 224x224 bicubic, ImageNet mean/std)."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            rgb = image.convert("RGB").resize(
                (EMBED_SIZE, EMBED_SIZE), resample=Image.Resampling.BICUBIC
            )
    # PIL raises many exception types for corrupt input; all mean "not an image" here.
    except Exception as exc:
        raise ApplicationError(
            f"preview {uri} is not an image: {exc}",
            type=ErrorType.RENDER_FAILED,
            non_retryable=True,
        ) from exc
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def cosine_distance(a: Embedding, b: Embedding) -> float:
    """1 - cosine similarity of two L2-normalised vectors, clamped to [0, 2]."""
    return min(2.0, max(0.0, 1.0 - float(np.dot(a, b))))
