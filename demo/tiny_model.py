"""Tiny random DINOv3 model for the demo and tests: built from a config, `save_pretrained`.

Tests load it through the production path (`DINOv3ViTModel.from_pretrained(DINOV3_MODEL)`), so
nothing is ever downloaded. Weights are random but deterministic (fixed seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

TINY_DINOV3_SEED = 1234
PREPROCESSOR_CONFIG = {
    "image_processor_type": "DINOv3ViTImageProcessor",
    "do_resize": True,
    "size": {"height": 224, "width": 224},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


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
    # The processor config the real DINOv3 checkpoints carry (written by hand: the transformers
    # processor class itself needs torchvision); the scorer reads it like any model's.
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    return directory
