"""Datasets (spec section 8), one module per file format, all returning host float32
images (N, C, H, W) scaled to [0, 1] (labels are never loaded: the model is unconditional).

=======  ========================================  ==========
name     source                                    module
=======  ========================================  ==========
mnist    IDX files, downloaded (md5-checked)       ``idx.py``
fmnist   IDX files, downloaded or Debian package   ``idx.py``
=======  ========================================  ==========

``load_dataset(name, split, data_dir, download, n)`` and ``dataset_shape(name)`` dispatch
on the registry below to the module's functions of the same names; each looks in
``<data_dir>/<name>/`` first and otherwise says which files to put where.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from . import idx
from .base import SPLITS, DatasetError, check_n, check_split

# name -> module with load_dataset(name, split, data_dir, download, n) and dataset_shape(name)
LOADERS: dict[str, ModuleType] = {
    "mnist": idx,
    "fmnist": idx,
}
DATASETS: tuple[str, ...] = tuple(LOADERS)


def _module(name: str) -> ModuleType:
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return LOADERS[name]


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)`` of dataset ``name``."""
    return _module(name).dataset_shape(name)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None) -> np.ndarray:
    """Images of ``name``/``split`` as host float32 (N, C, H, W) in [0, 1]; ``n`` keeps the
    first n (more than the split holds is an error)."""
    module = _module(name)
    check_split(split)
    check_n(n)
    return module.load_dataset(name, split, data_dir, download, n)


__all__ = ["DATASETS", "SPLITS", "DatasetError", "dataset_shape", "load_dataset"]
