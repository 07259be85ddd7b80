"""Checkpoints: one ``.npz`` holding everything needed to resume or sample.

Layout (all arrays stored on the host):
    format, version           identify the file as ours
    config                    canonical INI text (``config_to_ini``)
    meta                      JSON: iteration, epoch, seed, dataset, data_shape, dtype, rng state
    param/<name>              model parameters     (``KAEM.parameters()``)
    buffer/<name>             grids, frozen τ, prior domain (``KAEM.buffers()``)
    adam/t, adam/m/<name>, adam/v/<name>   optimiser state

Files are written atomically (``kaem/atomic.py``): an interrupted write never leaves a half
checkpoint under the real name.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from .atomic import atomic_open
from .backend import to_numpy

FORMAT = "kaem-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, foreign or incompatible."""


def save_checkpoint(path: str, params: dict[str, Any], buffers: dict[str, Any],
                    optimizer_state: dict[str, Any], config_ini: str, meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (``atomic_open``)."""
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "config": np.array(config_ini), "meta": np.array(json.dumps(meta)),
    }
    arrays.update({f"param/{k}": to_numpy(v) for k, v in params.items()})
    arrays.update({f"buffer/{k}": to_numpy(v) for k, v in buffers.items()})
    arrays.update({f"adam/{k}": to_numpy(v) for k, v in optimizer_state.items()})
    with atomic_open(path, "wb", suffix=".npz") as fh:
        np.savez(fh, **arrays)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint into host arrays.

    Returns a dict with ``config`` (INI text), ``meta`` (dict), ``params``, ``buffers`` and
    ``optimizer`` (name -> array). Raises :class:`CheckpointError` naming the file for a
    missing, truncated, corrupt or foreign file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt: {e}") from None
    if str(data.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path!r} is not a KAEM checkpoint (no '{FORMAT}' format tag)")
    if int(data["version"]) != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {int(data['version'])}; "
                              f"this code reads version {VERSION}")
    try:
        meta = json.loads(str(data["meta"]))
        config = str(data["config"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r} lacks readable config/meta: {e}") from None

    def group(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}

    return {"config": config, "meta": meta, "params": group("param/"),
            "buffers": group("buffer/"), "optimizer": group("adam/")}


def restore_model(ckpt: dict[str, Any], be: Any) -> Any:
    """Rebuild the ``KAEM`` stored in a loaded checkpoint on backend ``be``."""
    from .config import ConfigError, config_from_ini
    from .model import KAEM

    try:
        cfg = config_from_ini(ckpt["config"])
        model = KAEM(cfg, tuple(ckpt["meta"]["data_shape"]), be, seed=int(ckpt["meta"].get("seed", 0)))
        model.load_arrays(ckpt["params"], ckpt["buffers"])
    except (ConfigError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint does not match this version of the model: {e}") from None
    return model
