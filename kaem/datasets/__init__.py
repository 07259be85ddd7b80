"""Datasets, one module per file format, all returning host float32
images (N, C, H, W) scaled to [0, 1] (labels are never loaded: the model is unconditional).

==================  ================================================  ==============  =============
name                source                                            shape           module
==================  ================================================  ==============  =============
mnist, fmnist       IDX files, downloaded (md5) or Debian package     (1, 28, 28)     ``idx.py``
mnist32, fmnist32   the same files, zero-padded by 2 px               (1, 32, 32)     ``idx.py``
svhn                ``train_32x32.mat`` / ``test_32x32.mat``, md5     (3, 32, 32)     ``svhn.py``
cifar10             binary batches or ``cifar-10-binary.tar.gz``, md5 (3, 32, 32)     ``cifar10.py``
celeba              ``img_align_celeba/`` or its zip; crop, resize    (3, 64, 64)     ``celeba.py``
darcy               generated: GRF permeability, 5-point FD solve     (1, 32, 32)     ``darcy.py``
==================  ================================================  ==============  =============

Every module offers ``load_dataset(name, split, data_dir, download, n)`` and
``dataset_shape(name)``; each looks in ``<data_dir>/<name>/`` first and otherwise downloads
(where a stable URL exists, md5-checked, via ``download.py``) or says which files to put
where. Modules whose pipeline owns the image size (``NATIVE_RESIZE``: celeba crops and
resizes while decoding, darcy generates at that resolution) also take ``resize``; for the
others the registry resizes after loading (``base.resize_images``). A module may offer
``dataset_info(name, data_dir, resize)``: what a checkpoint must remember about the data
(darcy: its min–max scaling).
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

from kaem.datasets import celeba, cifar10, darcy, idx, svhn
from kaem.datasets.base import SPLITS, DatasetError, check_n, check_resize, check_split, resize_images

# name -> module with load_dataset(name, split, data_dir, download, n[, resize]) and dataset_shape(name[, resize])
LOADERS: dict[str, ModuleType] = {
    **{name: idx for name in idx.DATASETS},
    "svhn": svhn,
    "cifar10": cifar10,
    "celeba": celeba,
    "darcy": darcy,
}
DATASETS: tuple[str, ...] = tuple(LOADERS)


def _module(name: str) -> ModuleType:
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return LOADERS[name]


def _native(module: ModuleType) -> bool:
    return getattr(module, "NATIVE_RESIZE", False)


def dataset_shape(name: str, resize: int | None = None) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)`` of dataset ``name``, after ``resize`` (the side in pixels)."""
    module = _module(name)
    check_resize(resize)
    if _native(module):
        return module.dataset_shape(name, resize)
    c, h, w = module.dataset_shape(name)
    return (c, resize, resize) if resize else (c, h, w)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None, resize: int | None = None) -> np.ndarray:
    """Images of ``name``/``split`` as host float32 (N, C, H, W) in [0, 1]; ``n`` keeps the
    first n (more than the split holds is an error); ``resize`` makes them resize×resize
    (the reference's ``img_resize``, for prototyping on a CPU)."""
    module = _module(name)
    check_split(split)
    check_n(n)
    check_resize(resize)
    if _native(module):
        return module.load_dataset(name, split, data_dir, download, n, resize=resize)
    x = module.load_dataset(name, split, data_dir, download, n)
    return resize_images(x, resize) if resize else x


def dataset_info(name: str, data_dir: str | os.PathLike = "data", resize: int | None = None) -> dict[str, Any]:
    """JSON-able facts about the data a model is trained on, for its checkpoint: ``resize``
    and whatever the module reports (darcy: u_min, u_max)."""
    module = _module(name)
    info: dict[str, Any] = {"resize": resize}
    if hasattr(module, "dataset_info"):
        info.update(module.dataset_info(name, data_dir, resize))
    return info


__all__ = ["DATASETS", "SPLITS", "DatasetError", "dataset_info", "dataset_shape", "load_dataset"]
