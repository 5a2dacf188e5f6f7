"""GPU-queue activities: render a GLB to the 2x2 preview PNG (the recipe is activities/preview.py,
upstream c263c11's render-service), and the DINOv3 distance of two previews.

Owns the activities, the DINOv3 embedding and the distance; the only module that imports torch
and transformers; it runs on the `gpu` task queue and workflows never import it. Does not own
downloads (activities/generation.py) or the decision what distance counts as a mismatch (the
audit policy).

As upstream, a new preview is compared with the submitted preview PNG that the competition's
submission-collector rendered with the render-service from the miner's submitted GLB (audits
before the `compare-submitted-png` marker rendered the submitted GLB here instead). Previews are
cached by the GLB's sha256 in the store's record store, embeddings by the PNG's sha256 in
memory, so a retried activity or a second audit of the same file costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.preview import (
    RENDER_VERSION,
    MeshLoadError,
    PreviewRenderer,
    load_mesh_as_upstream,
)
from models.audit import ArtifactResult, RenderPreviewInput, ScoreDistanceInput, ScoreDistanceResult
from models.errors import ErrorType
from storage import ArtifactStore, ArtifactStoreError


@contextlib.contextmanager
def _artifact_errors(uri: str) -> Iterator[None]:
    """A URI outside the store is INVALID_INPUT, a missing blob RENDER_FAILED (non-retryable);
    an unreachable store stays retryable (it is ours, never the miner's)."""
    try:
        yield
    except ArtifactStoreError as exc:
        raise ApplicationError(str(exc), type=ErrorType.INVALID_INPUT, non_retryable=True) from exc
    except FileNotFoundError as exc:
        raise ApplicationError(
            f"no such artifact: {uri}", type=ErrorType.RENDER_FAILED, non_retryable=True
        ) from exc


# --- embedding ------------------------------------------------------------------------------------

EMBED_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_CACHE_ENTRIES = 4096
"""In-memory embeddings kept per process (a 384-float vector each for ViT-S)."""

_RECORD_PREVIEW = "preview"
HEARTBEAT_SECONDS = 2.0
"""Both activities beat this often: one lost with its worker or server is retried in seconds."""

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
        glb_sha = await self._sha256(uri)
        key = f"{RENDER_VERSION}:{glb_sha}"
        cached = await self._cached_preview(key)
        if cached is not None:
            return cached

        started = time.monotonic()
        glb = await self._read(uri)
        try:
            mesh = await asyncio.to_thread(load_mesh_as_upstream, glb)
        except MeshLoadError as exc:
            raise ApplicationError(
                f"cannot render {uri}: {exc}", type=ErrorType.RENDER_FAILED, non_retryable=True
            ) from exc
        png = await self._renderer.render(mesh)
        png_uri = await self._store.put_bytes(png, ".png")
        result = ArtifactResult(uri=png_uri, size=len(png))
        await self._store.put_record(_RECORD_PREVIEW, key, result)
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
        sha_a = await self._sha256(input.png_a_uri)
        sha_b = await self._sha256(input.png_b_uri)
        wanted = {sha_a: input.png_a_uri, sha_b: input.png_b_uri}
        loop = asyncio.get_running_loop()

        def read(uri: str) -> bytes:  # the embedder's thread reads through the loop's store
            return asyncio.run_coroutine_threadsafe(self._store.read_bytes(uri), loop).result()

        embeddings = await asyncio.to_thread(self._embedder.embed, wanted, read)
        distance = cosine_distance(embeddings[sha_a], embeddings[sha_b])
        return ScoreDistanceResult(distance=distance)

    async def _read(self, uri: str) -> bytes:
        """A stored file's bytes, mapping a bad or missing URI to a non-retryable error."""
        with _artifact_errors(uri):
            return await self._store.read_bytes(uri)

    async def _sha256(self, uri: str) -> str:
        """sha256 of a stored file, mapping a bad or missing URI to a non-retryable error."""
        with _artifact_errors(uri):
            return await self._store.sha256_of(uri)

    async def _cached_preview(self, key: str) -> ArtifactResult | None:
        cached = await self._store.get_record(_RECORD_PREVIEW, key, ArtifactResult)
        if cached is None or not await self._store.exists(cached.uri):
            return None
        return cached


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
