"""SVHN (cropped digits, 32×32 RGB) from the official MATLAB files.

``<data_dir>/svhn/train_32x32.mat`` (73 257 images) and ``test_32x32.mat`` (26 032), read
with ``scipy.io.loadmat``; labels are never loaded. A missing file is downloaded from the
official site when allowed (md5-checked), else the error says which file to put where.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from kaem.datasets.base import DatasetError, check_count, check_n, check_split, to_unit_float
from kaem.datasets.download import ensure_file

DATASETS: tuple[str, ...] = ("svhn",)
URL = "http://ufldl.stanford.edu/housenumbers/"
FILES: dict[str, str] = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
# md5 of the served files, as listed by torchvision.datasets.SVHN (split_list).
MD5: dict[str, str] = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                       "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
SHAPE = (3, 32, 32)


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)``: (3, 32, 32)."""
    return SHAPE


def read_mat(path: pathlib.Path, n: int | None = None) -> np.ndarray:
    """The images of an SVHN ``.mat`` file as uint8 (N, 3, 32, 32), the first ``n`` only.

    The file stores ``X`` as (32, 32, 3, N) (MATLAB's column-major image stack). A file
    that is not a MATLAB v5 file with such an ``X`` is a :class:`DatasetError`.
    """
    from scipy.io import loadmat

    try:
        X = loadmat(str(path), variable_names=["X"]).get("X")
    except NotImplementedError as exc:  # scipy's message for v7.3 (HDF5) files
        raise DatasetError(f"{path} is a MATLAB v7.3 (HDF5) file ({exc}); the official SVHN files "
                           "are MATLAB v5: fetch them again") from None
    except Exception as exc:  # truncated/corrupt/foreign files fail in many ways inside scipy
        raise DatasetError(f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); "
                           "delete it and fetch it again") from None
    if X is None or X.dtype != np.uint8 or X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        got = "no variable X" if X is None else f"X of {X.dtype} {X.shape}"
        raise DatasetError(f"{path} holds {got}, expected uint8 X of shape (32, 32, 3, N): "
                           "is it an SVHN cropped-digits file?")
    X = X[..., :check_count(n, X.shape[3], f"svhn ({path})")]
    return np.ascontiguousarray(X.transpose(3, 2, 0, 1))


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None) -> np.ndarray:
    """Images of svhn/``split`` as host float32 (N, 3, 32, 32) in [0, 1]; ``n`` keeps the first n."""
    check_split(split)
    check_n(n)
    fname = FILES[split]
    path = ensure_file(pathlib.Path(data_dir) / "svhn" / fname, [URL + fname], MD5[fname],
                       f"SVHN {split} split ('svhn')", download)
    return to_unit_float(read_mat(path, n))
