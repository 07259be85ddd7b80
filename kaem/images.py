"""Image grids as PNG (Pillow), written atomically."""
from __future__ import annotations

import math

from typing import Any

import numpy as np
from PIL import Image

from .atomic import atomic_open
from .backend import to_numpy


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (n, C, H, W) with values in [0, 1] into one uint8 array (rows·(H+pad)+pad,
    cols·(W+pad)+pad[, C]); values outside [0, 1] are clipped."""
    n, C, H, W = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.zeros((C, rows * (H + pad) + pad, cols * (W + pad) + pad), dtype=np.float32)
    for i in range(n):  # a few dozen tiles: host-side, not a hot loop
        r, c = divmod(i, cols)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = images[i]
    out = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out[0] if C == 1 else out.transpose(1, 2, 0)


def save_png(path: str, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    with atomic_open(path, "wb", suffix=".png") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def save_sample_grid(path: str, model: Any, n: int, rng: Any) -> np.ndarray:
    """Generate n images from ``model`` (prior -> generator means) with ``rng``, write them
    as one PNG grid at ``path`` (atomically) and return them as host (n, C, H, W)."""
    x = to_numpy(model.generate(n, rng)).reshape((n,) + tuple(model.data_shape))
    save_png(path, image_grid(x))
    return x
