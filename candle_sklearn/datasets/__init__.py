"""Data: synthetic CLIP-like features, the generated image world, and the reference
protocol's split rules."""

from .protocol import long_tailed_counts, long_tailed_indices
from .synthetic import make_clip_like_features
from .world import (COLOURS, PATTERNS, SHAPES, make_world_images, render_world_image,
                    world_classes, world_new_classes)

__all__ = [
    "COLOURS", "PATTERNS", "SHAPES", "long_tailed_counts", "long_tailed_indices",
    "make_clip_like_features", "make_world_images", "render_world_image", "world_classes",
    "world_new_classes",
]
