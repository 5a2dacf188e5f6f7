"""Benchmark: how many pods does one render + score worker keep up with?

    .venv/bin/python -m benchmarks.render_throughput           # ~1.5-3 min on 2 CPU cores
    .venv/bin/python -m benchmarks.render_throughput --quick   # tiny sizes (make bench), ~30 s
    .venv/bin/python -m benchmarks.render_throughput --faces 20000 200000 --renders 8

Measures side by side, in one process, on the device it prints (cpu, or the CUDA device when
`torch.cuda.is_available()`; the OpenGL renderer pyrender got, e.g. Mesa llvmpipe on a CPU host):

- previews per second: GLBs made with trimesh (a displaced UV sphere inside +-0.5, textured,
  `--faces` triangles each) rendered exactly as the `render_preview` activity does: the GLB bytes
  through `activities.preview.load_mesh_as_upstream`, then one warm `PreviewRenderer` (its own
  OpenGL thread, 4 views at 1036x1036 supersampled into the 1041x1041 PNG), sequentially;
- embeddings per second through the scoring code (`activities.scoring.DinoEmbedder.embed`, the
  path of `score_distance`: PNG decode + the model's preprocessing + the forward pass), for the
  tiny demo/test model and for a model with DINOv3 ViT-S/16's real architecture (384 wide, 12
  layers, 6 heads, patch 16, 4 register tokens; random weights, built from a config, nothing is
  downloaded), at several batch sizes: 1 (one PNG per call), 2 (what `score_distance` embeds per
  call: the new preview and the submitted preview) and 8 (if several prompts were batched);
- pods supported by one GPU worker with MAX_CONCURRENT_GPU_ACTIVITIES=1 (render and score run
  one after the other): each pod yields one GLB per generation time, each prompt costs one
  preview render (the submitted preview PNG is fetched, not rendered) plus two embeddings, so
  pods = generation time / (render s + 2 x embed s).

It asserts nothing. Inputs are never served from a cache: every embedding call uses fresh keys.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image
from transformers import DINOv3ViTConfig, DINOv3ViTModel
from transformers.utils import logging as transformers_logging

from activities.preview import (
    GRID_SIZE,
    SUPERSAMPLING,
    VIEW_SIZE,
    PreviewRenderer,
    load_mesh_as_upstream,
)
from activities.scoring import DinoEmbedder, Preprocessing
from demo.tiny_model import PREPROCESSOR_CONFIG, build_tiny_dinov3

ORCHESTRATOR_NOTE = (
    "The orchestrator is never the bottleneck below that: benchmarks/pipeline.py measures its "
    "cost at ~0.1 s per prompt (GPU hand-over + tail), off the GPU worker, against 60-110 s "
    "generations."
)


# --- inputs -----------------------------------------------------------------------------------


def make_glb(faces: int, texture: int, seed: int = 7) -> bytes:
    """A one-mesh GLB of about `faces` triangles inside +-0.5: a bumpy UV sphere, with a
    `texture` x `texture` base-colour texture (vertex colours when `texture` is 0)."""
    rng = np.random.default_rng(seed)
    side = max(round(math.sqrt(faces / 4)) + 1, 4)  # a count=[n, n] sphere has 4n(n-2) faces
    sphere = trimesh.creation.uv_sphere(radius=1.0, count=[side, side])
    vertices = np.asarray(sphere.vertices, dtype=np.float64)
    unit = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    azimuth = np.arctan2(unit[:, 0], unit[:, 2])
    polar = np.arccos(np.clip(unit[:, 1], -1.0, 1.0))
    bumps = 0.15 * np.sin(5 * azimuth) * np.sin(4 * polar) + 0.01 * rng.standard_normal(len(unit))
    vertices = unit * (1.0 + bumps)[:, None]
    vertices *= 0.5 / np.abs(vertices).max()
    if texture > 0:
        uv = np.stack([azimuth / (2 * math.pi) + 0.5, 1.0 - polar / math.pi], axis=1)
        pixels = rng.integers(0, 256, (texture, texture, 3), dtype=np.uint8)
        pixels[:, :, 0] = np.linspace(0, 255, texture, dtype=np.uint8)[None, :]
        visual: Any = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(pixels))
    else:
        colors = rng.integers(0, 256, (len(vertices), 4), dtype=np.uint8)
        colors[:, 3] = 255
        visual = trimesh.visual.ColorVisuals(vertex_colors=colors)
    mesh = trimesh.Trimesh(vertices=vertices, faces=sphere.faces, visual=visual, process=False)
    data = mesh.export(file_type="glb")
    assert isinstance(data, bytes)
    return data


def build_vits16_shape(directory: Path, seed: int = 0) -> Path:
    """A random-weight model with DINOv3 ViT-S/16's architecture (facebook/dinov3-vits16-...),
    saved like a checkpoint with the processor config the real one carries."""
    config = DINOv3ViTConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=12,
        num_attention_heads=6,
        patch_size=16,
        num_register_tokens=4,
        image_size=224,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DINOv3ViTModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    return directory


def parameter_count(directory: Path) -> int:
    """Parameters of a saved DINOv3 model (loaded on the CPU just to count them)."""
    model = DINOv3ViTModel.from_pretrained(str(directory))
    return sum(p.numel() for p in model.parameters())


# --- measurements -----------------------------------------------------------------------------


class InfoRenderer(PreviewRenderer):
    """The audit's PreviewRenderer, plus a question to its OpenGL thread: which renderer?"""

    def gl_renderer(self) -> str:
        def ask() -> str:
            self._ensure_context()
            from OpenGL import GL

            name = GL.glGetString(GL.GL_RENDERER)
            return name.decode() if isinstance(name, bytes) else str(name)

        return self._executor.submit(ask).result()


@dataclass(frozen=True)
class RenderRow:
    """Sequential previews of one GLB with one warm renderer."""

    faces: int
    glb_mb: float
    load_s: float
    render_s: float
    png_kb: float

    @property
    def total_s(self) -> float:
        """What `render_preview` spends per GLB (load + render + PNG encode)."""
        return self.load_s + self.render_s


def measure_render(
    renderer: PreviewRenderer, glbs: Sequence[bytes], renders: int
) -> tuple[list[RenderRow], list[bytes]]:
    """Load + render each GLB `renders` times (after one warm-up each), the GLBs taking turns
    so that other load on the machine hits all alike; medians, and each GLB's preview PNG."""
    pngs = [renderer.render_blocking(load_mesh_as_upstream(glb)) for glb in glbs]  # warm-up
    loads: list[list[float]] = [[] for _ in glbs]
    draws: list[list[float]] = [[] for _ in glbs]
    faces = [0] * len(glbs)
    for _ in range(renders):
        for index, glb in enumerate(glbs):
            started = time.perf_counter()
            mesh = load_mesh_as_upstream(glb)
            loaded = time.perf_counter()
            pngs[index] = renderer.render_blocking(mesh)
            loads[index].append(loaded - started)
            draws[index].append(time.perf_counter() - loaded)
            faces[index] = len(mesh.faces)
    rows = [
        RenderRow(
            faces=faces[i],
            glb_mb=len(glbs[i]) / 1e6,
            load_s=statistics.median(loads[i]),
            render_s=statistics.median(draws[i]),
            png_kb=len(pngs[i]) / 1e3,
        )
        for i in range(len(glbs))
    ]
    return rows, pngs


@dataclass(frozen=True)
class EmbedRow:
    """Embeddings through DinoEmbedder.embed at one batch size."""

    model: str
    batch: int
    per_image_s: float
    preprocess_s: float

    @property
    def per_second(self) -> float:
        return 1.0 / self.per_image_s


def measure_embed(
    model: str, directory: Path, pngs: Sequence[bytes], batches: Sequence[int], images: int
) -> list[EmbedRow]:
    """Per-image seconds of `DinoEmbedder.embed` at each batch size (fresh keys, so nothing is
    cached) and of the preprocessing alone. In each round every batch size embeds the same
    number of images, the sizes taking turns; the median round counts."""
    embedder = DinoEmbedder(str(directory))
    embedder.load()
    by_uri = {f"png-{i}": png for i, png in enumerate(pngs)}
    uris = itertools.cycle(sorted(by_uri))
    keys = itertools.count()
    prep = Preprocessing.of_model(str(directory), None)
    per_round = max(batches)
    rounds = max(math.ceil(images / per_round), 3)

    def embed_images(batch: int) -> float:
        """Seconds per image for `per_round` images in calls of `batch`."""
        calls = math.ceil(per_round / batch)
        started = time.perf_counter()
        for _ in range(calls):
            wanted = {f"key-{next(keys)}": next(uris) for _ in range(batch)}
            embedder.embed(wanted, by_uri.__getitem__)
        return (time.perf_counter() - started) / (calls * batch)

    def preprocess_image() -> float:
        uri = next(uris)
        started = time.perf_counter()
        prep.apply(by_uri[uri], uri)
        return time.perf_counter() - started

    for batch in batches:
        embed_images(batch)  # warm-up (allocator, kernels)
    times: dict[int, list[float]] = {batch: [] for batch in batches}
    preprocess: list[float] = []
    for _ in range(rounds):
        for batch in batches:
            times[batch].append(embed_images(batch))
        preprocess += [preprocess_image(), preprocess_image()]
    preprocess_s = statistics.median(preprocess)
    return [
        EmbedRow(model, batch, statistics.median(times[batch]), preprocess_s) for batch in batches
    ]


# --- report -----------------------------------------------------------------------------------


def device_line() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} torch threads)"


def print_tables(
    args: argparse.Namespace,
    renders: list[RenderRow],
    embeds: list[EmbedRow],
    params: dict[str, int],
) -> None:
    size = VIEW_SIZE * SUPERSAMPLING
    print(f"\n### Previews ({GRID_SIZE}x{GRID_SIZE} PNG, 4 views at {size}x{size}, one renderer)\n")
    texture = f"{args.texture}x{args.texture} texture" if args.texture else "vertex colours"
    print(f"| faces ({texture}) | GLB MB | load ms | render + PNG ms | PNG KB | previews/s |")
    print("|---|---|---|---|---|---|")
    for r in renders:
        print(
            f"| {r.faces:,} | {r.glb_mb:.1f} | {r.load_s * 1000:.0f} | {r.render_s * 1000:.0f} "
            f"| {r.png_kb:.0f} | {1 / r.total_s:.2f} |"
        )

    print("\n### Embeddings (DinoEmbedder.embed: PNG decode + preprocessing + forward)\n")
    print("| model | params | batch | ms/image | embeddings/s | of which preprocessing ms/image |")
    print("|---|---|---|---|---|---|")
    for e in embeds:
        print(
            f"| {e.model} | {params[e.model] / 1e6:.2f} M | {e.batch} | {e.per_image_s * 1000:.1f} "
            f"| {e.per_second:.1f} | {e.preprocess_s * 1000:.1f} |"
        )

    generations = " | ".join(f"pods @ {g:g} s" for g in args.generation)
    print(
        "\n### Pods one GPU worker keeps up with (MAX_CONCURRENT_GPU_ACTIVITIES=1): "
        "generation time / (render s + 2 x embed s)\n"
    )
    print(f"| faces | model | embed batch | render s | 2 x embed s | s/prompt | {generations} |")
    print("|---|---|---|---|---|---|" + "---|" * len(args.generation))
    for r in renders:
        for e in embeds:
            per_prompt = r.total_s + 2 * e.per_image_s
            pods = " | ".join(f"{g / per_prompt:.0f}" for g in args.generation)
            print(
                f"| {r.faces:,} | {e.model} | {e.batch} | {r.total_s:.3f} "
                f"| {2 * e.per_image_s:.3f} | {per_prompt:.3f} | {pods} |"
            )
    worst = max(renders, key=lambda r: r.total_s)
    model = embeds[-1].model  # the real-shaped model when measured
    batch = 2 if 2 in args.batches else min(args.batches)  # score_distance embeds 2 per call
    embed = next(e for e in embeds if e.model == model and e.batch == batch)
    generation = min(args.generation)
    pods = generation / (worst.total_s + 2 * embed.per_image_s)
    print(
        f"\npods_supported = {generation:g} s / ({worst.total_s:.3f} s render of {worst.faces:,} "
        f"faces + 2 x {embed.per_image_s:.3f} s embed, {model}, batch {batch}) = {pods:.1f}"
    )
    overlap = generation / max(worst.total_s, 2 * embed.per_image_s)
    print(
        f"(default MAX_CONCURRENT_GPU_ACTIVITIES=4 lets one render, on its OpenGL thread, overlap "
        f"one scoring, under the model lock: at most {overlap:.1f} pods, where the host has "
        "cores for both; not measured here)"
    )
    print(f"\n{ORCHESTRATOR_NOTE}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--texture", type=int, default=1024, help="texture edge px (0: colours)")
    parser.add_argument("--renders", type=int, default=5, help="timed renders per GLB")
    parser.add_argument("--images", type=int, default=48, help="timed embeddings per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument(
        "--models", nargs="+", choices=["tiny", "vits16"], default=["tiny", "vits16"]
    )
    parser.add_argument(
        "--generation", type=float, nargs="+", default=[60.0, 110.0], help="generation seconds"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (make bench)")
    args = parser.parse_args(argv)
    transformers_logging.disable_progress_bar()
    if args.quick:
        args.faces, args.texture, args.renders, args.images = [2_000], 256, 2, 4
        args.batches = [1, 2]

    began = time.perf_counter()
    renderer = InfoRenderer()
    try:
        gl = renderer.gl_renderer()
        print(
            f"device: {device_line()}; OpenGL: {gl}; {os.cpu_count()} CPUs "
            f"({platform.machine()}); load average {os.getloadavg()[0]:.2f}"
        )
        glbs = [make_glb(faces, args.texture) for faces in args.faces]
        renders, pngs = measure_render(renderer, glbs, args.renders)
    finally:
        renderer.close()

    embeds: list[EmbedRow] = []
    params: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        for model in args.models:
            if model == "tiny":
                directory = build_tiny_dinov3(Path(tmp) / "tiny")
                label = "tiny (demo/tests)"
            else:
                directory = build_vits16_shape(Path(tmp) / "vits16")
                label = "ViT-S/16 shape, random weights"
            params[label] = parameter_count(directory)
            embeds += measure_embed(label, directory, pngs, args.batches, args.images)

    print_tables(args, renders, embeds, params)
    print(
        f"\n(run took {time.perf_counter() - began:.0f} s; load average at the end "
        f"{os.getloadavg()[0]:.2f}: other work on the machine slows every figure above)"
    )


if __name__ == "__main__":
    main()
