"""Images as PNG (Pillow), written atomically: sample grids (the PNG enlarged by pixel repetition
so that it can be seen), one file per sample at the model's size (for FID tools such as
torch-fidelity and clean-fid), and false-colour maps of scalar fields."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from PIL import Image

from kaem.run.atomic import atomic_open
from kaem.backend import to_numpy


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images (n, C, H, W), C = 1 or 3, values in [0, 1] (clipped) -> uint8 (n, H, W) for
    C = 1 or (n, H, W, 3) for C = 3: the layouts Pillow reads as greyscale / RGB."""
    n, C, H, W = images.shape
    if C not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {C}")
    out = (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out[:, 0] if C == 1 else out.transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (n, C, H, W), C = 1 or 3, values in [0, 1] (clipped) into one uint8 array
    (rows·(H+pad)+pad, cols·(W+pad)+pad[, 3]) with ``nrow`` columns (default ≈ √n); the
    padding and unused tiles are black."""
    n, C, H, W = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    tiles = np.zeros((rows * cols, C, H + pad, W + pad), np.float32)
    tiles[:n, :, pad:, pad:] = images
    # (rows, cols, C, H+pad, W+pad) -> (C, rows, H+pad, cols, W+pad), then close the right/bottom edge
    grid = tiles.reshape(rows, cols, C, H + pad, W + pad).transpose(2, 0, 3, 1, 4)
    grid = np.pad(grid.reshape(C, rows * (H + pad), cols * (W + pad)), ((0, 0), (0, pad), (0, pad)))
    return to_uint8(grid[None])[0]


GRID_TARGET_PX = 512  # a sample grid's PNG is enlarged until its longer side is about this


def grid_scale(height: int, width: int, target: int = GRID_TARGET_PX) -> int:
    """The integer factor k ≥ 1 that brings a grid's longer side L = max(height, width) nearest
    to ``target`` pixels: k = max(1, round(target / L)). Never below 1, so a grid already
    ``target`` or more pixels long is kept as it is (64 MNIST tiles: 242 px -> k = 2, 484 px)."""
    return max(1, round(target / max(int(height), int(width), 1)))


def upscale(array: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an image (H, W) or (H, W, 3) by an integer k: every pixel
    becomes a k × k block, (H·k, W·k[, 3])."""
    return array if k == 1 else np.repeat(np.repeat(array, k, axis=0), k, axis=1)


def save_png(path: str, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    with atomic_open(path, "wb", suffix=".png") as fh:
        Image.fromarray(array).save(fh, format="PNG")


class NonFiniteImages(ValueError):
    """Generated images hold NaN or inf (a diverged model)."""


def save_sample_grid(path: str, model: Any, n: int, rng: Any, require_finite: bool = False) -> np.ndarray:
    """Generate n images from ``model`` (prior -> generator means) with ``rng``, write them
    as one PNG grid at ``path`` (atomically), enlarged by ``grid_scale`` for viewing, and
    return them as host (n, C, H, W) at the model's size. With ``require_finite``,
    non-finite pixels raise :class:`NonFiniteImages` and nothing is written."""
    x = to_numpy(model.generate(n, rng)).reshape((n,) + tuple(model.data_shape))
    if require_finite and not np.isfinite(x).all():
        raise NonFiniteImages(f"{int((~np.isfinite(x)).sum())} of {x.size} generated pixels are non-finite (NaN or inf)")
    grid = image_grid(x)
    save_png(path, upscale(grid, grid_scale(*grid.shape[:2])))
    return x


def save_pngs(folder: str, images: np.ndarray) -> list[str]:
    """One PNG per image (n, C, H, W) in [0, 1]: ``folder/000000.png``, ... (greyscale or RGB,
    each written atomically); returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{i:06d}.png") for i in range(images.shape[0])]
    for path, img in zip(paths, to_uint8(images)):
        save_png(path, img)
    return paths


# viridis (matplotlib's perceptually uniform map) at 9 evenly spaced stops, as sRGB
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], np.float32)


def colormap(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """False colour for a scalar field: x (...) -> uint8 (..., 3), viridis from ``lo`` (dark
    blue) to ``hi`` (yellow), values outside clipped; linear between the stops."""
    t = np.clip((np.asarray(x, np.float32) - lo) / max(hi - lo, 1e-12), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(t.astype(np.int64), len(_VIRIDIS) - 2)
    frac = (t - i)[..., None]
    return (_VIRIDIS[i] * (1 - frac) + _VIRIDIS[i + 1] * frac + 0.5).astype(np.uint8)
