"""What every dataset loader shares: the error type, argument checks, the step from stored
uint8 pixels to float32 images, the generic resize, and a progress line for long work."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")


class DatasetError(RuntimeError):
    """A dataset cannot be found, fetched or read; the message says what to do.

    ``offline`` marks a dataset that is missing while downloading was not allowed: a
    caller that knows how the user turned downloading off (the CLI's --no-download) can
    add how to turn it on."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def check_n(n: Any) -> None:
    """``n`` (how many images to keep) is None or a positive integer."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise DatasetError(f"n must be a positive integer or None, got {n!r}")


def check_resize(resize: Any) -> None:
    """``resize`` (the side of the square images wanted) is None or an integer >= 2."""
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, (int, np.integer))
                               or resize < 2):
        raise DatasetError(f"resize must be an integer >= 2 (pixels) or None, got {resize!r}")


def check_count(n: int | None, available: int, what: str) -> int:
    """How many of ``available`` items to keep: all when ``n`` is None, else ``n``; asking
    for more than there are is an error naming ``what`` (e.g. "svhn train (path)")."""
    if n is None:
        return available
    if n > available:
        raise DatasetError(f"asked for n={n} images but {what} has only {available}")
    return n


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (any shape) -> float32 in [0, 1]; divides in float32, so there is no
    float64 temporary."""
    return pixels.astype(np.float32) / np.float32(255.0)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Resize float images (N, C, H, W) in [0, 1] to (N, C, size, size) with Pillow's
    bicubic filter (anti-aliased when shrinking), clipped back to [0, 1].

    Pillow resizes one 2-D float plane at a time, so this loops over the N·C planes; it
    runs once per load (the reference's ``img_resize``), never inside training.
    """
    from PIL import Image

    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    out = np.empty((n * c, size, size), np.float32)
    for i, plane in enumerate(x.reshape(n * c, h, w)):  # a 2-D float32 array is a mode "F" image
        img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        out[i] = np.asarray(img.resize((size, size), Image.BICUBIC))
    return np.clip(out, 0.0, 1.0, out=out).reshape(n, c, size, size)


Progress = Callable[..., None]


def progress(label: str, unit: str = "MB", scale: float = 1e6) -> Progress:
    """A callback ``report(done, total, final=False)`` that prints ``label: done/total unit
    (pct%)`` on one stderr line, at most four times a second (and always when ``final``).
    ``scale`` divides the counts (1e6: bytes shown as MB; 1: plain counts)."""
    last = [0.0]

    def fmt(v: float) -> str:
        return f"{v / scale:.1f}" if scale != 1 else f"{int(v)}"

    def report(done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - last[0] < 0.25:
            return
        last[0] = now
        text = fmt(done) + (f"/{fmt(total)}" if total else "") + f" {unit}"
        pct = f" ({math.floor(100 * done / total)}%)" if total else ""
        sys.stderr.write(f"\r  {label}: {text}{pct}" + ("\n" if final else ""))
        sys.stderr.flush()

    return report
