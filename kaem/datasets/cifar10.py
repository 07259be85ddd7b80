"""CIFAR-10 (32×32 RGB) from the BINARY version.

Looked for in ``<data_dir>/cifar10/``, in this order:

1. ``cifar-10-batches-bin/`` holding ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train,
   10 000 images each) and ``test_batch.bin`` (test);
2. ``cifar-10-binary.tar.gz`` (the official archive), whose members are read in memory,
   without extracting anything to disk;
3. downloaded from the official site when allowed (md5-checked), else an error that says
   which file to put where.

Each record is 1 label byte followed by 3 072 pixel bytes (the red, green and blue 32×32
planes, row-major), so a batch file is a whole number of 3 073-byte records. The python
version (pickled batches) is refused, never unpickled: unpickling runs arbitrary code.
"""
from __future__ import annotations

import os
import pathlib
import tarfile
import zlib
from typing import Iterator

import numpy as np

from kaem.datasets.base import DatasetError, check_count, check_n, check_split, to_unit_float
from kaem.datasets.download import ensure_file

DATASETS: tuple[str, ...] = ("cifar10",)
BIN_DIR = "cifar-10-batches-bin"
ARCHIVE = "cifar-10-binary.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/" + ARCHIVE
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # as published on https://www.cs.toronto.edu/~kriz/cifar.html
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
PYTHON_VERSION = ("cifar-10-batches-py", "cifar-10-python.tar.gz")
RECORD = 1 + 3 * 32 * 32
SHAPE = (3, 32, 32)


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)``: (3, 32, 32)."""
    return SHAPE


def _refuse_python_version(where: str) -> DatasetError:
    return DatasetError(
        f"{where} is the python version of CIFAR-10 (pickled batches), which this loader never "
        f"unpickles; get the binary version instead: {ARCHIVE} from {URL} (md5 {MD5})")


def parse_batch(raw: bytes, where: str) -> np.ndarray:
    """One binary batch -> uint8 images (N, 3, 32, 32); labels are checked (< 10), not kept."""
    if not raw or len(raw) % RECORD:
        raise DatasetError(f"{where} is not a CIFAR-10 binary batch: {len(raw)} bytes is not a "
                           f"positive multiple of the {RECORD}-byte record")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    if records[:, 0].max() > 9:
        raise DatasetError(f"{where} is not a CIFAR-10 binary batch: label bytes above 9 "
                           "(CIFAR-100's binary layout has two label bytes)")
    return records[:, 1:].reshape(-1, *SHAPE)


def _members_in_dir(folder: pathlib.Path, names: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the batch files, in ``names`` order."""
    for name in names:
        try:
            yield name, (folder / name).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {folder / name}: {exc.strerror or exc}") from None


def _members_in_archive(path: pathlib.Path, names: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the wanted members of the .tar.gz, in archive order: one sequential
    pass, since a gzip stream cannot seek cheaply."""
    wanted = {f"{BIN_DIR}/{name}": name for name in names}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name.startswith(PYTHON_VERSION[0]):
                    raise _refuse_python_version(f"{path} (member {member.name})")
                if member.name in wanted and member.isfile():
                    yield wanted[member.name], tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{path} is a corrupt or truncated tar.gz archive ({exc}); delete it and "
                           "fetch it again") from None


def _read_batches(members: Iterator[tuple[str, bytes]], names: tuple[str, ...], n: int | None,
                  where: str) -> np.ndarray:
    """Parse the batches ``names`` in order into uint8 (N, 3, 32, 32), reading members only
    until the first ``n`` images are complete (all of them when ``n`` is None)."""
    found: dict[str, np.ndarray] = {}

    def leading() -> list[np.ndarray]:  # the batches of the unbroken run from names[0]
        run = []
        for name in names:
            if name not in found:
                break
            run.append(found[name])
        return run

    def enough() -> bool:
        run = leading()
        return len(run) == len(names) or (n is not None and sum(len(b) for b in run) >= n)

    for name, raw in members:
        found[name] = parse_batch(raw, f"{where}/{name}")
        if enough():
            break
    if not enough():
        missing = next(name for name in names if name not in found)
        raise DatasetError(f"{where} has no {missing}: is it the CIFAR-10 binary version?")
    return np.concatenate(leading())


def _source(folder: pathlib.Path, download: bool) -> pathlib.Path:
    """The batch folder or the archive to read (search order: module doc)."""
    bin_dir = folder / BIN_DIR
    if bin_dir.is_dir() and all((bin_dir / f).is_file() for fs in SPLIT_FILES.values() for f in fs):
        return bin_dir
    archive = folder / ARCHIVE
    if not archive.is_file():
        for name in PYTHON_VERSION:
            if (folder / name).exists():
                raise _refuse_python_version(str(folder / name))
    return ensure_file(archive, [URL], MD5, "CIFAR-10 ('cifar10', binary version)", download,
                       note=f"or its extracted folder {BIN_DIR}/ with the six .bin files")


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None) -> np.ndarray:
    """Images of cifar10/``split`` as host float32 (N, 3, 32, 32) in [0, 1]; ``n`` keeps the
    first n (train: data_batch_1 first)."""
    check_split(split)
    check_n(n)
    src = _source(pathlib.Path(data_dir) / "cifar10", download)
    names = SPLIT_FILES[split]
    members = _members_in_dir(src, names) if src.is_dir() else _members_in_archive(src, names)
    images = _read_batches(members, names, n, str(src))
    return to_unit_float(images[:check_count(n, images.shape[0], f"cifar10 {split} ({src})")])
