"""MNIST and Fashion-MNIST from IDX files.

Both datasets use the same four IDX files. :func:`locate` finds a folder holding them, in
this order:

1. ``<data_dir>/<name>/`` (each file gzipped or not);
2. system folders (for ``fmnist``: ``/usr/share/datasets/fashion-mnist``, installed by the
   Debian package ``dataset-fashion-mnist``);
3. if ``download`` is set, ``<data_dir>/<name>/`` filled from public mirrors (md5-checked,
   written atomically, never overwriting a file that is already there);
4. otherwise a one-line :class:`DatasetError` that says which files to put where (a folder
   made for a download that failed is removed again when it is empty).

:func:`load_dataset` returns images as host float32 ``(N, 1, 28, 28)`` in ``[0, 1]``
(``mnist32`` / ``fmnist32``: the same files, zero-padded to ``(N, 1, 32, 32)``); labels are
never loaded (the model is unconditional). Only numpy and the standard library
are used, so data loading never depends on the GPU extra.
"""
from __future__ import annotations

import gzip
import os
import pathlib
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from kaem.datasets.base import DatasetError, check_count, check_n, check_split, to_unit_float
from kaem.datasets.download import download_file, failure_text, made_folders

# The 32×32 variants read the same files (from ``<data_dir>/<base>/``) and zero-pad 2 px on
# each side, so that generators with a 32×32 output (the conv-transpose stack) train on them.
PADDED: dict[str, str] = {"mnist32": "mnist", "fmnist32": "fmnist"}
PAD = 2
DATASETS: tuple[str, ...] = ("mnist", "fmnist", *PADDED)

# (images, labels) base names per split; on disk each may also carry a ".gz" suffix.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILES: tuple[str, ...] = tuple(f for pair in SPLIT_FILES.values() for f in pair)

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class _Source:
    """Where one dataset comes from: mirrors, md5 of each ``.gz`` file, system folders."""

    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # keyed by the .gz file name as served by the mirrors
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None


SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        title="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fmnist": _Source(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Upstream (zalandoresearch/fashion-mnist README) md5s of the served .gz files. The
        # Debian package's .gz files hash differently only because their gzip headers were
        # normalised (file name dropped, mtime reset); the decompressed bytes are identical.
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
}

_SHAPES: dict[str, tuple[int, int, int]] = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28),
                                            "mnist32": (1, 32, 32), "fmnist32": (1, 32, 32)}


# --------------------------------------------------------------------------- validation


def _check_name(name: str) -> _Source:
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; this loader handles: {', '.join(DATASETS)}"
        )
    return SOURCES[PADDED.get(name, name)]


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)`` of dataset ``name``."""
    _check_name(name)
    return _SHAPES[name]


# --------------------------------------------------------------------------- IDX reading


def _read_bytes(path: pathlib.Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic (not by suffix)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # bad header/CRC, truncated stream
        raise DatasetError(
            f"{path} is a corrupt or truncated gzip file ({exc}); delete it and fetch it again"
        ) from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian numpy array.

    The magic number, dimensions and payload size are checked; any mismatch raises a
    :class:`DatasetError` naming the file.
    """
    path = pathlib.Path(path)
    data = _read_bytes(path)

    def bad(why: str) -> DatasetError:
        return DatasetError(
            f"{path} is not a valid IDX file ({why}); delete it and fetch it again"
        )

    if len(data) < 4:
        raise bad(f"only {len(data)} bytes")
    zero0, zero1, code, ndim = data[:4]
    if zero0 or zero1 or code not in _IDX_DTYPES:
        raise bad(f"bad magic number 0x{data[:4].hex()}")
    if ndim == 0:
        raise bad("zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"header truncated: {len(data)} bytes, need {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise bad(f"{kind}: {len(data)} bytes, dims {dims} need {expected}")
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    # astype copies: the result is writable, native-endian and owns its memory.
    return arr.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------- locating


def _find_file(folder: pathlib.Path, base: str) -> pathlib.Path | None:
    """``folder/base`` or ``folder/base.gz``, whichever exists (uncompressed first: faster)."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: pathlib.Path) -> list[str]:
    """Standard base names with neither a raw nor a ``.gz`` file in ``folder``."""
    return [base for base in FILES if _find_file(folder, base) is None]


def _download(folder: pathlib.Path, source: _Source) -> list[str]:
    """Download the missing standard files into ``folder``; return failure messages.

    Stops at the first file no mirror could serve, so an offline machine fails fast; a
    folder made for the download is removed again if nothing arrived in it."""
    sys.stderr.write(f"fetching {source.title} into {folder}\n")
    try:
        with made_folders(folder):
            for base in _missing(folder):
                fname = f"{base}.gz"
                failures = download_file(folder / fname, [m + fname for m in source.mirrors], source.md5[fname])
                if failures:  # the dataset is unusable anyway; don't wait on every other file too
                    return failures
    except OSError as exc:
        return [f"cannot create {folder}: {exc.strerror or exc}"]
    return []


def _instructions(name: str, folder: pathlib.Path, failures: list[str]) -> DatasetError:
    """The one-line 'what to do' error for a dataset that could not be found or fetched:
    which files to put in which folder and where they are served (``offline`` when no
    download was tried)."""
    source = _check_name(name)
    missing = _missing(folder) if folder.is_dir() else list(FILES)
    message = (f"{source.title} ({name!r}) is not available: put {', '.join(f'{b}.gz' for b in missing)} "
               f"(gzipped or not) in {folder.resolve()}/, from {' or '.join(source.mirrors)}")
    if source.apt_package:
        message += f", or apt-get install -y {source.apt_package} (into {', '.join(source.system_dirs)})"
    if failures:
        return DatasetError(f"{message}; {failure_text(failures)}")
    return DatasetError(message, offline=True)


def locate(
    name: str, data_dir: str | os.PathLike = "data", download: bool = True
) -> pathlib.Path:
    """Folder holding the four IDX files of dataset ``name`` (search order: module doc)."""
    source = _check_name(name)
    folder = pathlib.Path(data_dir) / PADDED.get(name, name)
    if folder.is_dir() and not _missing(folder):
        return folder
    for system_dir in source.system_dirs:
        candidate = pathlib.Path(system_dir)
        if candidate.is_dir() and not _missing(candidate):
            return candidate
    failures: list[str] = []
    if download:
        failures = _download(folder, source)
        if not failures and not _missing(folder):
            return folder
    raise _instructions(name, folder, failures)


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike = "data",
    download: bool = True,
    n: int | None = None,
) -> np.ndarray:
    """Images of ``name``/``split`` as host float32 ``(N, C, H, W)`` scaled to ``[0, 1]``
    (``mnist32``/``fmnist32``: the 28×28 images with a zero border of 2 px).

    ``n`` keeps the first ``n`` images; asking for more than the split holds is an error.
    """
    _check_name(name)
    check_split(split)
    check_n(n)
    folder = locate(name, data_dir, download)
    path = _find_file(folder, SPLIT_FILES[split][0])
    assert path is not None  # locate() guarantees all four files are present
    raw = read_idx(path)
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[1:] != (28, 28):
        raise DatasetError(
            f"{path} holds {raw.dtype} data of shape {raw.shape}, expected uint8 (N, 28, 28); "
            "is it an images file?"
        )
    raw = raw[:check_count(n, raw.shape[0], f"{name} {split} ({path})")]
    if name in PADDED:
        raw = np.pad(raw, ((0, 0), (PAD, PAD), (PAD, PAD)))
    return to_unit_float(raw)[:, None]
