"""Deterministic stand-in for a 3D generator: (image hash, seed, variant) -> GLB bytes.

Owns the mapping from inputs to a coloured primitive mesh and its binary glTF encoding. The same
inputs give byte-identical GLB bytes in every process (no clocks, no randomness, sorted JSON); a
different `variant` gives a different primitive family *and* a hue rotated by a large step, so
renders of a "cheating" miner (another variant) are far from the honest ones.

The geometry and the GLB container are written with numpy and struct only (no trimesh/scipy at
import): a miner process starts in well under a second, which matters when tests start dozens.
Any glTF 2.0 reader (trimesh, pyrender) loads the result: one triangle mesh, Y up, with
`POSITION` and `COLOR_0` (RGBA8) vertex attributes.
"""

from __future__ import annotations

import colorsys
import hashlib
import itertools
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray


class Family(StrEnum):
    """Primitive families; neighbours in `FAMILIES` are chosen to look clearly different."""

    BOX = "box"
    SPHERE = "sphere"
    CONE = "cone"
    TORUS = "torus"
    CYLINDER = "cylinder"
    CROSS = "cross"


FAMILIES: tuple[Family, ...] = (
    Family.BOX,
    Family.SPHERE,
    Family.CONE,
    Family.TORUS,
    Family.CYLINDER,
    Family.CROSS,
)
VARIANT_FAMILY_STEP = 1
"""Each variant moves one family along `FAMILIES` (variants 0..5 never share a family)."""
VARIANT_HUE_STEP = 0.37
"""Each variant rotates the hue by ~133 degrees (variants 0, 1, 2 are >= 94 degrees apart)."""

_SECTIONS = 48  # segments around the axis of round shapes
_SATURATION = 0.75
_VALUE_LOW = 0.55  # shading from bottom (dark) to top (bright)
_VALUE_HIGH = 1.0
_DECIMALS = 6  # vertex rounding, so float noise can never change the bytes
_SPEC_REACH = 0.55  # largest |coordinate|: inside upstream's +-0.6 GLB size rule

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT = 5126
_UNSIGNED_BYTE = 5121
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_TRIANGLES = 4


@dataclass(frozen=True)
class MeshSpec:
    """Everything the output depends on, derived from the inputs (exposed for tests)."""

    family: Family
    hue: float  # 0..1
    scale: tuple[float, float, float]  # per-axis stretch, 0.6..1.4
    angle: float  # rotation about the vertical axis, radians
    ratio: float  # family-specific proportion (torus tube, cone tip, arm width), 0.2..0.5


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh with per-vertex RGBA8 colours, Y up."""

    vertices: NDArray[np.float32]  # (n, 3)
    faces: NDArray[np.uint32]  # (m, 3), counter-clockwise seen from outside
    colors: NDArray[np.uint8]  # (n, 4)


def mesh_spec(image_sha256: str, seed: int, variant: int) -> MeshSpec:
    """Derive the mesh parameters from the inputs.

    Family and base hue come from (image, seed) only and are then shifted by the variant, so a
    different variant is guaranteed to differ in shape and colour; proportions come from a hash
    that includes the variant.

    Args:
        image_sha256: Hex sha256 of the prompt image bytes.
        seed: The generation seed.
        variant: Which "model" this miner runs; 0 is the honest one.

    Returns:
        The parameters of the mesh `generate_glb` builds.
    """
    base = hashlib.sha256(f"{image_sha256}:{seed}".encode()).digest()
    detail = hashlib.sha256(f"{image_sha256}:{seed}:{variant}".encode()).digest()
    family = FAMILIES[(base[0] + variant * VARIANT_FAMILY_STEP) % len(FAMILIES)]
    hue = (base[1] / 256 + variant * VARIANT_HUE_STEP) % 1.0
    scale = (
        0.6 + 0.8 * detail[0] / 255,
        0.6 + 0.8 * detail[1] / 255,
        0.6 + 0.8 * detail[2] / 255,
    )
    angle = detail[3] / 256 * 2 * math.pi
    ratio = 0.2 + 0.3 * detail[4] / 255
    return MeshSpec(family=family, hue=hue, scale=scale, angle=angle, ratio=ratio)


def _revolve(
    profile: Sequence[tuple[float, float]],
    sections: int,
    closed: bool = False,
    phase: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Surface of revolution about z of a (radius, z) profile; r == 0 points become poles.

    Trace the profile so that the surface's outside is on its right-hand side when walking
    from bottom to top (outward normals); `closed` joins the last point back to the first.
    """
    angles = phase + 2 * math.pi * np.arange(sections) / sections
    points: list[NDArray[np.float64]] = []
    rings: list[NDArray[np.int64]] = []
    count = 0
    for radius, z in profile:
        if radius == 0:
            points.append(np.array([[0.0, 0.0, z]]))
            rings.append(np.full(sections, count, dtype=np.int64))
            count += 1
        else:
            ring = np.column_stack(
                [radius * np.cos(angles), radius * np.sin(angles), np.full(sections, z)]
            )
            points.append(ring)
            rings.append(count + np.arange(sections, dtype=np.int64))
            count += sections
    pairs = list(itertools.pairwise(rings))
    if closed:
        pairs.append((rings[-1], rings[0]))
    faces: list[NDArray[np.int64]] = []
    for low, high in pairs:
        low_next, high_next = np.roll(low, -1), np.roll(high, -1)
        for tri in (
            np.column_stack([low, low_next, high_next]),
            np.column_stack([low, high_next, high]),
        ):
            keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
            faces.append(tri[keep])
    return np.concatenate(points), np.concatenate(faces)


def _prism(half_width: float, half_height: float) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """An axis-aligned box along z: a 4-sided prism turned by 45 degrees."""
    radius = half_width * math.sqrt(2)
    profile = [
        (0.0, -half_height),
        (radius, -half_height),
        (radius, half_height),
        (0.0, half_height),
    ]
    return _revolve(profile, 4, phase=math.pi / 4)


def _primitive(spec: MeshSpec) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The family's shape, z up, roughly within the unit cube."""
    family, ratio = spec.family, spec.ratio
    if family is Family.BOX:
        return _prism(0.5, 0.5)
    if family is Family.SPHERE:
        steps = np.linspace(0.0, math.pi, 17)[1:-1]
        profile = [(0.5 * math.sin(p), -0.5 * math.cos(p)) for p in steps]
        return _revolve([(0.0, -0.5), *profile, (0.0, 0.5)], _SECTIONS)
    if family is Family.CONE:
        return _revolve([(0.0, -0.5), (0.5, -0.5), (0.0, 0.5 + ratio)], _SECTIONS)
    if family is Family.TORUS:
        tube = 0.5 * ratio
        steps = 2 * math.pi * np.arange(24) / 24
        profile = [(0.5 + tube * math.cos(t), tube * math.sin(t)) for t in steps]
        return _revolve(profile, _SECTIONS, closed=True)
    if family is Family.CYLINDER:
        radius = 0.5 * ratio + 0.15
        return _revolve([(0.0, -0.6), (radius, -0.6), (radius, 0.6), (0.0, 0.6)], _SECTIONS)
    vertices, faces = _prism(ratio / 2, 0.6)
    parts_v, parts_f = [], []
    for shift in range(3):  # the same bar along z, x and y (cyclic axis swaps keep winding)
        parts_v.append(np.roll(vertices, shift, axis=1))
        parts_f.append(faces + shift * len(vertices))
    return np.concatenate(parts_v), np.concatenate(parts_f)


def build_mesh(spec: MeshSpec) -> Mesh:
    """Build the coloured mesh for `spec`: stretched, turned, shaded along its height, Y up."""
    vertices, faces = _primitive(spec)
    vertices = vertices * np.asarray(spec.scale)
    cos_a, sin_a = math.cos(spec.angle), math.sin(spec.angle)
    turn = np.array([[cos_a, -sin_a, 0.0], [sin_a, cos_a, 0.0], [0.0, 0.0, 1.0]])
    vertices = vertices @ turn.T
    # z up -> glTF's y up: (x, y, z) -> (x, z, -y), a proper rotation (winding is kept).
    vertices = np.column_stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]])
    # Upstream's render service refuses any coordinate outside +-0.6: shrink into the spec.
    reach = float(np.abs(vertices).max())
    if reach > _SPEC_REACH:
        vertices = vertices * (_SPEC_REACH / reach)
    vertices = np.round(vertices, _DECIMALS)

    height = vertices[:, 1]
    span = float(height.max() - height.min()) or 1.0
    shade = _VALUE_LOW + (_VALUE_HIGH - _VALUE_LOW) * (height - height.min()) / span
    rgb = np.outer(shade, np.array(colorsys.hsv_to_rgb(spec.hue, _SATURATION, 1.0)))
    colors = np.full((len(vertices), 4), 255, dtype=np.uint8)
    colors[:, :3] = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return Mesh(vertices=vertices.astype(np.float32), faces=faces.astype(np.uint32), colors=colors)


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def encode_glb(mesh: Mesh, name: str) -> bytes:
    """Binary glTF 2.0 of one mesh (indices, POSITION, COLOR_0 in one buffer); sorted JSON."""
    blobs = [
        mesh.faces.astype("<u4").tobytes(),
        mesh.vertices.astype("<f4").tobytes(),
        mesh.colors.tobytes(),
    ]
    views, offset = [], 0
    for blob, target in zip(
        blobs, (_ELEMENT_ARRAY_BUFFER, _ARRAY_BUFFER, _ARRAY_BUFFER), strict=True
    ):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": target})
        offset += len(_pad(blob, b"\0"))
    binary = b"".join(_pad(blob, b"\0") for blob in blobs)
    document = {
        "asset": {"version": "2.0", "generator": "reference-miner"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {"attributes": {"POSITION": 1, "COLOR_0": 2}, "indices": 0, "mode": _TRIANGLES}
                ],
            }
        ],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": [
            {
                "bufferView": 0,
                "componentType": _UNSIGNED_INT,
                "count": int(mesh.faces.size),
                "type": "SCALAR",
                "min": [int(mesh.faces.min())],
                "max": [int(mesh.faces.max())],
            },
            {
                "bufferView": 1,
                "componentType": _FLOAT,
                "count": len(mesh.vertices),
                "type": "VEC3",
                "min": [float(v) for v in mesh.vertices.min(axis=0)],
                "max": [float(v) for v in mesh.vertices.max(axis=0)],
            },
            {
                "bufferView": 2,
                "componentType": _UNSIGNED_BYTE,
                "normalized": True,
                "count": len(mesh.colors),
                "type": "VEC4",
            },
        ],
    }
    text = _pad(json.dumps(document, sort_keys=True, separators=(",", ":")).encode(), b" ")
    chunks = [(_CHUNK_JSON, text), (_CHUNK_BIN, binary)]
    body = b"".join(struct.pack("<II", len(data), kind) + data for kind, data in chunks)
    return _GLB_MAGIC + struct.pack("<II", 2, 12 + len(body)) + body


def generate_glb(image_sha256: str, seed: int, variant: int) -> bytes:
    """The reference miner's "model": GLB bytes for (image hash, seed, variant).

    Args:
        image_sha256: Hex sha256 of the prompt image bytes.
        seed: The generation seed.
        variant: Which "model" this miner runs; 0 is the honest one.

    Returns:
        A binary glTF document; identical bytes for identical inputs in every process.
    """
    spec = mesh_spec(image_sha256, seed, variant)
    return encode_glb(build_mesh(spec), spec.family.value)
