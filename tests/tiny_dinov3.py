"""Tiny random DINOv3 model for tests: built from a config, saved with `save_pretrained`.

Tests load it through the production path (`DINOv3ViTModel.from_pretrained(DINOV3_MODEL)`), so
nothing is ever downloaded. Weights are random but deterministic (fixed seed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

TINY_DINOV3_SEED = 1234


def build_tiny_dinov3(directory: Path, seed: int = TINY_DINOV3_SEED) -> Path:
    """Build a tiny random DINOv3ViTModel and save it into `directory`.

    Args:
        directory: Where `save_pretrained` writes config.json and the weights (created if absent).
        seed: Torch seed for the random weights; the same seed gives the same weights.

    Returns:
        `directory`, ready to pass as `model_source` / DINOV3_MODEL.
    """
    config = DINOv3ViTConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        patch_size=16,
        num_register_tokens=4,
        image_size=224,
        initializer_range=0.2,
    )
    # fork_rng: seeding must not disturb the global RNG state other tests may rely on.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DINOv3ViTModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory
