"""The data a command works on: the train and test images of a run, and where a
checkpoint's own data are; and ``make-darcy``, which generates a Darcy flow data file.

A checkpoint written by the trainer remembers its data folder (``meta.data_dir``) and how
many test images its per-epoch evaluation used (``meta.n_test``); ``eval``, ``compare`` and
``train --resume`` use them unless told otherwise, so a run trained with ``--data-dir D
--n-test N`` is evaluated on the same images. Checkpoints written before these fields
existed fall back to ``data`` and TRAINING.N_test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kaem.run.failures import CommandError

DEFAULT_DATA_DIR = "data"
NO_DOWNLOAD_HINT = "or drop --no-download to download them"


@dataclass(frozen=True)
class DataSource:
    """Where a command reads its images: ``data_dir`` (the dataset cache folder), whether it
    may ``download`` missing files, and ``offline_hint``: what the error for a missing
    dataset adds when downloading is off (the CLI names its --no-download)."""

    data_dir: str = DEFAULT_DATA_DIR
    download: bool = True
    offline_hint: str = ""


def data_options(args: Any) -> dict[str, Any]:
    """A parsed command line's ``--data-dir`` and ``--no-download`` as the keyword arguments
    ``data_dir``, ``download`` and ``offline_hint`` of the commands that read a test set."""
    return {"data_dir": args.data_dir, "download": not args.no_download, "offline_hint": NO_DOWNLOAD_HINT}


def stored_data_dir(meta: dict[str, Any], given: str | None) -> str:
    """The data folder for a checkpoint's images: ``given`` (an explicit option) if set, else
    the one it was trained on (``meta.data_dir``), else ``data``."""
    return given or meta.get("data_dir") or DEFAULT_DATA_DIR


def stored_n_test(meta: dict[str, Any], given: int | None, cfg: Any) -> int:
    """The number of test images for a checkpoint: ``given`` if set, else the count its
    training evaluated on (``meta.n_test``), else the config's TRAINING.N_test."""
    return int(given or meta.get("n_test") or cfg["TRAINING"]["N_test"])


def load_splits(dataset: str, source: DataSource, n_train: int | None, n_test: int,
                resize: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(train, test) host float32 images (N, C, H, W) in [0, 1] of ``dataset``: the first
    ``n_train`` training images (None: the training split is not loaded) and the first
    ``n_test`` test images, ``resize``×``resize`` if set. A dataset missing while downloading
    is off raises :class:`~kaem.datasets.DatasetError` with ``source.offline_hint`` added."""
    from kaem.datasets import DatasetError, load_dataset

    try:
        train = None if n_train is None else load_dataset(dataset, "train", source.data_dir, source.download,
                                                          n=n_train, resize=resize)
        return train, load_dataset(dataset, "test", source.data_dir, source.download, n=n_test, resize=resize)
    except DatasetError as e:
        if getattr(e, "offline", False) and source.offline_hint:
            raise DatasetError(f"{e}; {source.offline_hint}") from None
        raise


def make_darcy_file(n: int, resolution: int, seed: int, data_dir: str,
                    say: Callable[[str], None] = print) -> dict[str, Any]:
    """``make-darcy``: generate ``n`` Darcy flow samples at ``resolution``² interior nodes
    into DATA_DIR/darcy/ (``kaem/datasets/darcy.py``); returns ``{"output": path}``."""
    from kaem.datasets.darcy import make_darcy

    if resolution < 2:
        raise CommandError(f"--resolution must be at least 2, got {resolution}")
    path = make_darcy(n, resolution, seed, data_dir)
    say(f"{path}: {n} samples, a and u of shape ({n}, {resolution}, {resolution})")
    return {"output": str(path)}
