"""What every dataset loader shares: the error type and argument checks."""
from __future__ import annotations

from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")


class DatasetError(RuntimeError):
    """A dataset cannot be found, fetched or read; the message says what to do."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def check_n(n: Any) -> None:
    """``n`` (how many images to keep) is None or a positive integer."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise DatasetError(f"n must be a positive integer or None, got {n!r}")
