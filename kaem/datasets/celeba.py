"""CelebA (aligned faces, RGB) from its JPEGs.

Looked for in ``<data_dir>/celeba/``: the folder ``img_align_celeba/`` of ``*.jpg`` files,
else the official ``img_align_celeba.zip`` (read in memory, not extracted). CelebA has no
stable public URL (it is served from Google Drive), so nothing is downloaded: the error
says which files to put where.

Each 178×218 image is centre-cropped to 178×178 (the reference resizes the whole frame and
distorts the aspect ratio) and resized to ``resize``×``resize`` (default 64) with
Pillow's bicubic filter. JPEG decoding uses Pillow's draft mode, which lets the decoder
shrink by 1/2, 1/4 or 1/8 while staying at least as large as the target: much faster, and
the bicubic resize that follows does the rest.

Split: the official partition (``list_eval_partition.txt``) by image number: 000001–162770
train, 182638–202599 test (the 19 867 validation images in between are not used).

Decoding runs once: the images of a split are cached as a uint8 ``.npy`` under
``<data_dir>/celeba/cache/``, named for the split, size, count and a hash of the file names
they came from, written atomically. A cache holds the first images of the split in file
name order; a run that needs more decodes only the rest and writes a bigger cache.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pathlib
import re
import sys
import zipfile
import zlib
from typing import Callable

import numpy as np

from kaem.run.atomic import atomic_open
from kaem.datasets.base import DatasetError, check_count, check_n, check_resize, check_split, progress, to_unit_float

DATASETS: tuple[str, ...] = ("celeba",)
NATIVE_RESIZE = True  # the crop-and-resize is part of decoding (and of the cache key)
IMAGE_DIR = "img_align_celeba"
ARCHIVE = "img_align_celeba.zip"
DEFAULT_SIZE = 64
# official partition by image number (list_eval_partition.txt): inclusive ranges
PARTITION: dict[str, tuple[int, int]] = {"train": (1, 162770), "test": (182638, 202599)}
SOURCE_HELP = ("CelebA is not downloaded automatically (it is served from Google Drive): get "
               f"{ARCHIVE} ('Align&Cropped Images') from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html")
_NAME = re.compile(r"^(\d{6})\.jpg$")
_CACHE = re.compile(r"^(train|test)_(\d+)px_(\d+)_([0-9a-f]{12})\.npy$")


def dataset_shape(name: str, resize: int | None = None) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)``: (3, resize, resize), 64 by default."""
    side = resize or DEFAULT_SIZE
    return (3, side, side)


# --------------------------------------------------------------------------- sources


class _Source:
    """The JPEGs of one split, from the folder or the zip: sorted names and a reader."""

    def __init__(self, folder: pathlib.Path, split: str) -> None:
        img_dir, archive = folder / IMAGE_DIR, folder / ARCHIVE
        if img_dir.is_dir():
            self.where, self._zip = img_dir, None
            names = os.listdir(img_dir)
        elif archive.is_file():
            try:
                self._zip = zipfile.ZipFile(archive)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{archive} is not a readable zip file ({exc}); delete it and "
                                   "fetch it again") from None
            self.where = archive
            self._members = {pathlib.PurePosixPath(m).name: m for m in self._zip.namelist()
                             if m.lower().endswith(".jpg")}
            names = list(self._members)
        else:
            raise DatasetError(f"CelebA ('celeba') is not available: put the folder {IMAGE_DIR}/ of "
                               f"aligned JPEGs (000001.jpg ...) or {ARCHIVE} in {folder.resolve()}/. "
                               + SOURCE_HELP)
        lo, hi = PARTITION[split]
        jpgs = [m for m in names if m.lower().endswith(".jpg")]
        odd = [m for m in jpgs if not _NAME.match(m)]
        if odd:
            raise DatasetError(f"{self.where}: {odd[0]!r} is not a CelebA image name (NNNNNN.jpg); the "
                               "train/test split follows the official partition by image number")
        self.names = sorted(m for m in jpgs if lo <= int(m[:6]) <= hi)

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._members[name])
            return (self.where / name).read_bytes()
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise DatasetError(f"cannot read {self.where}/{name} ({exc})") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


# --------------------------------------------------------------------------- decoding


def decode(jpeg: bytes, size: int, where: str = "image") -> np.ndarray:
    """One JPEG -> uint8 (3, size, size): centre square crop, then bicubic resize."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            w, h = img.size
            side = min(w, h)  # JPEG: shrink while decoding, keeping the crop at least size px
            img.draft("RGB", (math.ceil(size * w / side), math.ceil(size * h / side)))
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            return np.asarray(img, np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{where} is not a readable JPEG ({exc}); replace it with the original file") from None


def decode_all(source: _Source, names: list[str], size: int,
               report: Callable[..., None] | None = None) -> np.ndarray:
    """Decode ``names`` into uint8 (len(names), 3, size, size), reporting progress."""
    out = np.empty((len(names), 3, size, size), np.uint8)
    for i, name in enumerate(names):  # one JPEG decode each: once per cache, never per epoch
        out[i] = decode(source.read(name), size, f"{source.where}/{name}")
        if report:
            report(i + 1, len(names), final=i + 1 == len(names))
    return out


# --------------------------------------------------------------------------- cache


def names_hash(names: list[str]) -> str:
    """12 hex digits identifying an ordered list of file names."""
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]


def _caches(cache_dir: pathlib.Path, split: str, size: int) -> list[tuple[int, str, pathlib.Path]]:
    """(count, names hash, path) of the cache files of (split, size), largest first."""
    if not cache_dir.is_dir():
        return []
    found = []
    for path in cache_dir.iterdir():
        m = _CACHE.match(path.name)
        if m and m.group(1) == split and int(m.group(2)) == size:
            found.append((int(m.group(3)), m.group(4), path))
    return sorted(found, reverse=True)


def _load_cache(path: pathlib.Path, count: int, size: int) -> np.ndarray | None:
    """The cached uint8 array, or None if the file is unreadable or not what its name says."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == np.uint8 and arr.shape == (count, 3, size, size) else None


def cached_images(folder: pathlib.Path, split: str, size: int, n: int | None) -> np.ndarray:
    """The first ``n`` (all if None) images of ``split`` as uint8 (n, 3, size, size), from the
    cache where it holds them, decoding (and caching) only what it lacks."""
    source = _Source(folder, split)
    try:
        names = source.names
        n = check_count(n, len(names), f"celeba {split} ({source.where})")
        cache_dir = folder / "cache"
        have: np.ndarray = np.empty((0, 3, size, size), np.uint8)
        for count, digest, path in _caches(cache_dir, split, size):
            arr = _load_cache(path, count, size) if count <= len(names) else None
            if arr is not None and digest == names_hash(names[:count]):
                have = arr
                break
        if have.shape[0] >= n:
            return np.array(have[:n])
        todo = names[have.shape[0]:n]
        sys.stderr.write(f"decoding {len(todo)} CelebA {split} images from {source.where} "
                         f"(cached in {cache_dir} for later runs)\n")
        images = np.concatenate([have, decode_all(source, todo, size, progress("celeba", "images", 1))])
    finally:
        source.close()
    path = cache_dir / f"{split}_{size}px_{n}_{names_hash(names[:n])}.npy"
    with atomic_open(str(path), "wb", suffix=".npy") as fh:
        np.save(fh, images)
    for _, _, old in _caches(cache_dir, split, size):  # smaller or stale: the new one supersedes them
        if old != path:
            old.unlink(missing_ok=True)
    return images


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None, resize: int | None = None) -> np.ndarray:
    """Images of celeba/``split`` as host float32 (N, 3, S, S) in [0, 1], S = ``resize`` or 64;
    ``n`` keeps the first n (in file name order). ``download`` is accepted for the common
    interface; CelebA is never downloaded."""
    check_split(split)
    check_n(n)
    check_resize(resize)
    return to_unit_float(cached_images(pathlib.Path(data_dir) / "celeba", split, resize or DEFAULT_SIZE, n))
