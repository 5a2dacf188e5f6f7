"""GPU-queue activities: render a GLB to the 2x2 preview PNG, and DINOv3 distance of two previews.

Owns the preview recipe, exactly upstream c263c11's render-service (REFERENCE.md sec. 13: the
GLB as it is, one mesh within +-0.6, pyrender, 4 views at azimuths 24/120/216/312 deg with the
camera 15 deg above, radius 2.0, yfov 49.1 deg, a directional light of 6.0 beside the camera,
2x supersampling, 518 px views in a 2x2 grid with a 5 px black gap; the golden test compares
with an image made by upstream's own code), the DINOv3 embedding and the distance. It is the
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
from dataclasses import dataclass
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
from activities.heartbeat import heartbeating
from models.audit import ArtifactResult, RenderPreviewInput, ScoreDistanceInput, ScoreDistanceResult
from models.errors import ErrorType

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

# --- embedding ------------------------------------------------------------------------------------

EMBED_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_CACHE_ENTRIES = 4096
"""In-memory embeddings kept per process (a 384-float vector each for ViT-S)."""

_RECORD_PREVIEW = "preview"
HEARTBEAT_SECONDS = 2.0
"""Both activities beat this often: one lost with its worker or server is retried in seconds."""
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
        revision: str | None = None,
    ) -> None:
        """Bind the activities; nothing heavy happens until first use (or `warm_up`).

        Args:
            store: Artifact store holding the GLBs and receiving the previews.
            model_source: DINOV3_MODEL: a hub id or a local directory from `save_pretrained`.
            device: torch device; None picks "cuda" when available, else "cpu".
            renderer: The preview renderer to use (default: a new one owned by this instance).
            revision: DINOV3_MODEL_REVISION: the hub revision (commit) to load; None = latest.
        """
        self._store = store
        self._renderer = renderer or PreviewRenderer()
        self._embedder = DinoEmbedder(model_source, device, revision)

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
        """Render a stored GLB to the 2x2 preview PNG and store it (heartbeating)."""
        async with heartbeating(HEARTBEAT_SECONDS):
            return await self._render_preview(input)

    async def _render_preview(self, input: RenderPreviewInput) -> ArtifactResult:
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
            mesh = await asyncio.to_thread(load_mesh_as_upstream, glb)
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
        """DINOv3 distance of two stored previews (heartbeating)."""
        async with heartbeating(HEARTBEAT_SECONDS):
            return await self._score_distance(input)

    async def _score_distance(self, input: ScoreDistanceInput) -> ScoreDistanceResult:
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


# --- embedding ------------------------------------------------------------------------------------


class DinoEmbedder:
    """DINOv3 CLS embeddings of PNG previews.

    Owns: the model (loaded once per process on first use, guarded by a lock), the device, and
    an in-memory LRU cache of embeddings by PNG sha256. All methods are synchronous and
    thread-safe; activities call them through `asyncio.to_thread`. Inference is serialised by
    the same lock.
    """

    def __init__(
        self, model_source: str, device: str | None = None, revision: str | None = None
    ) -> None:
        """Remember where the model comes from; nothing is loaded yet.

        Args:
            model_source: DINOV3_MODEL: hub id or a local `save_pretrained` directory.
            device: torch device; None picks "cuda" when available, else "cpu".
            revision: Hub revision to pin (upstream's example.env pins one); None = latest.
        """
        self._model_source = model_source
        self._revision = revision
        self._preprocessing = Preprocessing()
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
            prep = self._preprocessing
            batch = np.stack([prep.apply(_read_png(read, uri), uri) for _, uri in missing])
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

        where = str(local) if looks_local else source
        try:
            model: Any = DINOv3ViTModel.from_pretrained(where, revision=self._revision or "main")
            self._preprocessing = Preprocessing.of_model(where, self._revision)
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


@dataclass(frozen=True)
class Preprocessing:
    """The model's own image processor (its preprocessor_config.json), applied with PIL + numpy.

    transformers' DINOv3 processor needs torchvision, which cannot be installed beside this torch;
    this applies the same steps in its order: rescale, resize (antialiased), centre crop,
    normalise. Defaults are DINOv3ViTImageProcessor's (224x224 bilinear, ImageNet mean/std),
    used when a model directory carries no preprocessor config.
    """

    height: int = EMBED_SIZE
    width: int = EMBED_SIZE
    resample: int = int(Image.Resampling.BILINEAR)
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_center_crop: bool = False
    crop_height: int = EMBED_SIZE
    crop_width: int = EMBED_SIZE
    do_normalize: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def of_model(cls, source: str, revision: str | None) -> Preprocessing:
        """The processor config of a model directory or hub id (defaults where absent)."""
        from transformers.image_processing_base import ImageProcessingMixin

        try:
            config, _ = ImageProcessingMixin.get_image_processor_dict(source, revision=revision)
        except OSError:
            return cls()
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Preprocessing:
        """Read the fields of a preprocessor_config.json."""
        base = cls()
        size = config.get("size") or {}
        crop = config.get("crop_size") or {}
        edge = size.get("shortest_edge")
        return cls(
            height=int(size.get("height", edge or base.height)),
            width=int(size.get("width", edge or base.width)),
            resample=int(config.get("resample", base.resample)),
            do_resize=bool(config.get("do_resize", base.do_resize)),
            do_rescale=bool(config.get("do_rescale", base.do_rescale)),
            rescale_factor=float(config.get("rescale_factor", base.rescale_factor)),
            do_center_crop=bool(config.get("do_center_crop", base.do_center_crop)),
            crop_height=int(crop.get("height", base.crop_height)),
            crop_width=int(crop.get("width", base.crop_width)),
            do_normalize=bool(config.get("do_normalize", base.do_normalize)),
            mean=tuple(config.get("image_mean", base.mean)),
            std=tuple(config.get("image_std", base.std)),
        )

    def apply(self, png: bytes, uri: str) -> npt.NDArray[np.float32]:
        """PNG bytes -> the model's CHW float32 pixel values."""
        try:
            with Image.open(io.BytesIO(png)) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        # PIL raises many exception types for corrupt input; all mean "not an image" here.
        except Exception as exc:
            raise ApplicationError(
                f"preview {uri} is not an image: {exc}",
                type=ErrorType.RENDER_FAILED,
                non_retryable=True,
            ) from exc
        if self.do_rescale:
            rgb = (rgb * self.rescale_factor).astype(np.float32)
        if self.do_resize:
            # Per channel in float ("F" images), like the processor resizing rescaled tensors.
            rgb = np.stack(
                [
                    np.asarray(
                        Image.fromarray(rgb[:, :, c], mode="F").resize(
                            (self.width, self.height), resample=Image.Resampling(self.resample)
                        )
                    )
                    for c in range(3)
                ],
                axis=-1,
            )
        if self.do_center_crop:
            top = max((rgb.shape[0] - self.crop_height) // 2, 0)
            left = max((rgb.shape[1] - self.crop_width) // 2, 0)
            rgb = rgb[top : top + self.crop_height, left : left + self.crop_width]
        if self.do_normalize:
            mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
            rgb = ((rgb - mean) / std).astype(np.float32)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)


def cosine_distance(a: Embedding, b: Embedding) -> float:
    """1 - cosine similarity of two L2-normalised vectors, clamped to [0, 2]."""
    return min(2.0, max(0.0, 1.0 - float(np.dot(a, b))))
