"""ScoringActivities: real pyrender previews (EGL) and a tiny random DINOv3 model from disk."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.preview import (
    CAMERA_AZIMUTHS_DEGREES,
    GRID_GAP,
    GRID_SIZE,
    VIEW_SIZE,
    MeshLoadError,
    PreviewRenderer,
    camera_position,
    load_mesh_as_upstream,
    look_at,
)
from activities.scoring import DinoEmbedder, ScoringActivities
from demo.tiny_model import build_tiny_dinov3
from models.audit import RenderPreviewInput, ScoreDistanceInput
from models.errors import ErrorType
from storage import LocalArtifactStore

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"


def box_glb() -> bytes:
    mesh = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    mesh.visual.face_colors = [200, 40, 40, 255]
    data: bytes = mesh.export(file_type="glb")
    return data


def torus_glb() -> bytes:
    mesh = trimesh.creation.torus(major_radius=0.4, minor_radius=0.15)
    mesh.visual.face_colors = [40, 90, 220, 255]
    data: bytes = mesh.export(file_type="glb")
    return data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dinov3(tmp_path_factory.mktemp("tiny-dinov3"))


@pytest.fixture(scope="module")
def renderer() -> Iterator[PreviewRenderer]:
    shared = PreviewRenderer()
    yield shared
    shared.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts", "http://127.0.0.1:9")


@pytest.fixture
def scoring(
    store: LocalArtifactStore, model_dir: Path, renderer: PreviewRenderer
) -> ScoringActivities:
    return ScoringActivities(store, str(model_dir), "cpu", renderer=renderer)


class ExplodingRenderer(PreviewRenderer):
    """A renderer that must not be used (proves a cache hit)."""

    async def render(self, mesh: trimesh.Trimesh) -> bytes:
        raise AssertionError("rendered although the preview was cached")


async def render(scoring: ScoringActivities, glb_uri: str) -> str:
    result = await ActivityEnvironment().run(
        scoring.render_preview, RenderPreviewInput(glb_uri=glb_uri)
    )
    return result.uri


async def distance(scoring: ScoringActivities, a: str, b: str) -> float:
    result = await ActivityEnvironment().run(
        scoring.score_distance, ScoreDistanceInput(png_a_uri=a, png_b_uri=b)
    )
    return result.distance


def test_camera_sits_above_the_object_as_upstream_places_it() -> None:
    """Upstream's phi -15 puts the camera 15 deg *above* (y = +0.5176), looking at the origin."""
    eye = camera_position(24.0, -15.0, 2.0)
    assert np.allclose(eye, [0.7858, 0.5176, 1.7648], atol=1e-4)
    assert np.allclose(camera_position(120.0, -15.0, 2.0), [1.6730, 0.5176, -0.9659], atol=1e-4)
    pose = look_at(eye)
    assert np.allclose(-pose[:3, 2], -eye / 2.0)
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3))


def test_glb_is_rendered_as_it_is_never_normalised() -> None:
    """A mesh within +-0.6 keeps its coordinates; one outside fails with upstream's reason."""
    mesh = load_mesh_as_upstream(box_glb())
    assert np.allclose(mesh.bounds, [[-0.5, -0.3, -0.2], [0.5, 0.3, 0.2]])
    big = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3).export(file_type="glb")
    with pytest.raises(MeshLoadError, match=r"^Model exceeds unit cube size constraint$"):
        load_mesh_as_upstream(big)


def test_glb_must_hold_exactly_one_mesh() -> None:
    """Two geometries, or a point cloud, are refused with upstream's one-line reasons."""
    two = trimesh.Scene([trimesh.creation.box(extents=(0.2,) * 3), trimesh.creation.icosphere()])
    with pytest.raises(MeshLoadError, match=r"^GLB file contains 2 objects \(expected 1\)$"):
        load_mesh_as_upstream(two.export(file_type="glb"))
    cloud = trimesh.Scene(trimesh.PointCloud([[0, 0, 0], [0.1, 0.1, 0.1]]))
    with pytest.raises(MeshLoadError, match=r"^GLB file contains non-mesh object: PointCloud$"):
        load_mesh_as_upstream(cloud.export(file_type="glb"))


async def test_golden_preview_matches_upstreams_render_service(renderer: PreviewRenderer) -> None:
    """tests/fixtures/golden/mesh.glb renders to the image upstream's own render-service code
    made of it (tests/fixtures/golden/README.md says how): at most 1/255 off on a handful of
    pixels, from GL rasterisation, against 15.8/255 on average for the old recipe."""
    mesh = load_mesh_as_upstream((GOLDEN / "mesh.glb").read_bytes())
    ours = np.asarray(Image.open(io.BytesIO(await renderer.render(mesh))).convert("RGB"))
    theirs = np.asarray(Image.open(GOLDEN / "upstream-render.png").convert("RGB"))
    assert ours.shape == theirs.shape == (1041, 1041, 3)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.mean() < 0.05, diff.mean()
    assert (diff > 8).mean() < 0.001


async def test_render_preview_is_a_2x2_grid(
    scoring: ScoringActivities, store: LocalArtifactStore
) -> None:
    """A box renders to a 1041x1041 RGB PNG: white corners, black gaps, the mesh in each view."""
    png_uri = await render(scoring, store.files.put_bytes(box_glb(), ".glb"))

    assert png_uri.endswith(".png")
    image = Image.open(io.BytesIO(store.files.read_bytes(png_uri)))
    assert image.format == "PNG"
    assert image.mode == "RGB"
    assert image.size == (GRID_SIZE, GRID_SIZE) == (1041, 1041)
    for corner in [(0, 0), (GRID_SIZE - 1, 0), (0, GRID_SIZE - 1), (GRID_SIZE - 1, GRID_SIZE - 1)]:
        assert image.getpixel(corner) == WHITE
    pixels = np.asarray(image)
    gap = slice(VIEW_SIZE, VIEW_SIZE + GRID_GAP)
    assert (pixels[:, gap] == 0).all()
    assert (pixels[gap, :] == 0).all()
    for index in range(len(CAMERA_AZIMUTHS_DEGREES)):
        row, column = divmod(index, 2)
        top = row * (VIEW_SIZE + GRID_GAP)
        left = column * (VIEW_SIZE + GRID_GAP)
        centre = pixels[top + 239 : top + 279, left + 239 : left + 279].reshape(-1, 3)
        assert (centre != 255).any(axis=1).all(), f"view {index} has white at its centre"
        red, green, blue = centre.mean(axis=0)
        assert red > green + 30 and red > blue + 30, "the box's red colour is lost"


async def test_rendering_is_deterministic(renderer: PreviewRenderer) -> None:
    """The same GLB renders to the same PNG bytes every time."""
    mesh = load_mesh_as_upstream(box_glb())
    first = await renderer.render(mesh)
    second = await renderer.render(load_mesh_as_upstream(box_glb()))
    assert first == second


async def test_render_preview_cache_hit(
    scoring: ScoringActivities, store: LocalArtifactStore, model_dir: Path
) -> None:
    """A second render of the same GLB bytes returns the recorded preview without rendering."""
    glb_uri = store.files.put_bytes(box_glb(), ".glb")
    first = await render(scoring, glb_uri)

    no_render = ScoringActivities(store, str(model_dir), "cpu", renderer=ExplodingRenderer())
    try:
        assert await render(no_render, glb_uri) == first
    finally:
        no_render.close()


async def test_bad_glbs_are_render_failed(
    scoring: ScoringActivities, store: LocalArtifactStore
) -> None:
    """Unloadable bytes, point clouds and missing blobs -> non-retryable RENDER_FAILED."""
    point_cloud = trimesh.Scene(trimesh.PointCloud([[0, 0, 0], [1, 1, 1]])).export(file_type="glb")
    missing = (store.root / "blobs" / "ab" / ("ab" * 32 + ".glb")).as_uri()
    for uri in [
        store.files.put_bytes(b"glTF\x02\x00\x00\x00" + b"\xff" * 64, ".glb"),
        store.files.put_bytes(b"not a glb at all", ".glb"),
        store.files.put_bytes(point_cloud, ".glb"),
        missing,
    ]:
        with pytest.raises(ApplicationError) as info:
            await render(scoring, uri)
        assert info.value.type == ErrorType.RENDER_FAILED
        assert info.value.non_retryable
        assert uri in info.value.message


async def test_uri_outside_the_store_is_invalid_input(
    scoring: ScoringActivities, tmp_path: Path
) -> None:
    """A GLB URI outside the artifact store is refused, not read."""
    outside = tmp_path / "outside.glb"
    outside.write_bytes(box_glb())
    with pytest.raises(ApplicationError) as info:
        await render(scoring, outside.as_uri())
    assert info.value.type == ErrorType.INVALID_INPUT
    assert info.value.non_retryable


async def test_distance_identical_is_zero_and_different_is_larger(
    scoring: ScoringActivities, store: LocalArtifactStore
) -> None:
    """distance(identical previews) ~ 0 < distance(box vs blue torus)."""
    box_png = await render(scoring, store.files.put_bytes(box_glb(), ".glb"))
    torus_png = await render(scoring, store.files.put_bytes(torus_glb(), ".glb"))

    same = await distance(scoring, box_png, box_png)
    different = await distance(scoring, box_png, torus_png)

    assert 0.0 <= same < 1e-5
    assert different > same + 1e-4
    assert different <= 2.0
    assert await distance(scoring, torus_png, box_png) == pytest.approx(different, abs=1e-9)


async def test_embeddings_are_cached_by_content(model_dir: Path, store: LocalArtifactStore) -> None:
    """Once embedded, a PNG is not read (or embedded) again."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    uri = store.files.put_bytes(buffer.getvalue(), ".png")
    sha = store.files.sha256_of(uri)
    embedder = DinoEmbedder(str(model_dir), "cpu")

    first = embedder.embed({sha: uri}, store.files.read_bytes)

    def must_not_read(_: str) -> bytes:
        raise AssertionError("read although cached")

    second = embedder.embed({sha: uri}, must_not_read)
    assert np.array_equal(first[sha], second[sha])
    assert np.linalg.norm(first[sha]) == pytest.approx(1.0)


async def test_not_a_png_is_render_failed(
    scoring: ScoringActivities, store: LocalArtifactStore
) -> None:
    """Scoring a file that is not an image fails permanently, naming the URI."""
    bogus = store.files.put_bytes(b"definitely not a png", ".png")
    with pytest.raises(ApplicationError) as info:
        await distance(scoring, bogus, bogus)
    assert info.value.type == ErrorType.RENDER_FAILED
    assert bogus in info.value.message


async def test_missing_model_names_dinov3_model(store: LocalArtifactStore, tmp_path: Path) -> None:
    """A DINOV3_MODEL path with no model -> non-retryable error naming the variable."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), WHITE).save(buffer, format="PNG")
    png = store.files.put_bytes(buffer.getvalue(), ".png")
    missing = str(tmp_path / "no-model-here")
    scoring = ScoringActivities(store, missing, "cpu", renderer=ExplodingRenderer())
    try:
        with pytest.raises(ApplicationError) as info:
            await distance(scoring, png, png)
        assert info.value.type == ErrorType.SCORING_MODEL_UNAVAILABLE
        assert info.value.non_retryable
        assert "DINOV3_MODEL" in info.value.message
        assert missing in info.value.message
        with pytest.raises(ApplicationError):
            await scoring.warm_up()
    finally:
        scoring.close()
