"""Tiny random DINOv3 model for tests (the demo's builder; nothing is ever downloaded)."""

from demo.tiny_model import TINY_DINOV3_SEED, build_tiny_dinov3

__all__ = ["TINY_DINOV3_SEED", "build_tiny_dinov3"]
