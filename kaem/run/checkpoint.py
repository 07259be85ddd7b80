"""Checkpoints: one ``.npz`` holding everything needed to resume or sample.

Layout (all arrays stored on the host):
    format, version           identify the file as ours
    config                    canonical INI text (``config_to_ini``)
    meta                      JSON: iteration, epoch, seed, dataset, data_shape, dtype, rng state,
                              the data folder and the test count of the per-epoch evaluation
                              (data_dir, n_test: the defaults of eval, compare and resume;
                              optional, files written before them have neither)
    param/<name>              model parameters     (``KAEM.parameters()``)
    buffer/<name>             grids, frozen τ, prior domain (``KAEM.buffers()``)
    optim/type, optim/t, optim/lr     optimiser type (OPTIMIZER.type), steps taken, rate of the
                                      last step (the LR schedule is a function of the stored
                                      iteration, kaem/optim.py, so this is all of its state)
    optim/<slot>/<name>               the optimiser's per-parameter state, e.g. optim/m/<name>
                                      and optim/v/<name> for Adam, optim/v/<name> for Nesterov
                                      (``Optimizer.state_dict``; ``load_state_dict`` checks it)

Version 2 (optimiser group ``optim/`` with its type) replaced version 1 (Adam only, group
``adam/`` without type and rate), which is still read: as an Adam state.

Files are written atomically (``kaem/run/atomic.py``): an interrupted write never leaves a half
checkpoint under the real name.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any

import numpy as np

from kaem.run.atomic import atomic_open
from kaem.backend import to_numpy
from kaem.optim import OptimizerStateError

FORMAT = "kaem-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
GROUPS = {"param/": "params", "buffer/": "buffers", "optim/": "optimizer"}  # entry prefix -> key of load_checkpoint's dict
_HEADER = ("format", "version", "config", "meta")
_OPT_PREFIX = next(p for p, key in GROUPS.items() if key == "optimizer")
CKPT_NAME = "ckpt.npz"  # a run folder's checkpoint
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"  # how an .npz (a zip) and an .npy file begin


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, foreign or incompatible."""


def save_checkpoint(path: str, params: dict[str, Any], buffers: dict[str, Any],
                    optimizer_state: dict[str, Any], config_ini: str, meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (``atomic_open``)."""
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "config": np.array(config_ini), "meta": np.array(json.dumps(meta)),
    }
    for prefix, group in zip(GROUPS, (params, buffers, optimizer_state)):
        arrays.update({f"{prefix}{k}": to_numpy(v) for k, v in group.items()})
    with atomic_open(path, "wb", suffix=".npz") as fh:
        np.savez(fh, **arrays)


def _fail(path: str, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {field}: {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any, finite: bool = True) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (math.isfinite(v) or not finite)


def _check_rng_state(state: Any) -> str | None:
    """None if ``state`` is a CPU generator state this numpy accepts, else why not."""
    if state is None:
        return None
    if not isinstance(state, dict):
        return f"expected a generator state (a JSON object) or null, got {type(state).__name__}"
    try:
        np.random.default_rng(0).bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        return f"not a valid {type(np.random.default_rng(0).bit_generator).__name__} state ({e})"
    return None


def _number_lists(v: Any, positive: bool = False, finite: bool = True) -> bool:
    """A dict of lists of numbers (finite and positive ones if asked)."""
    return isinstance(v, dict) and all(isinstance(x, list) and all(
        _is_number(e, finite) and (not positive or e > 0) for e in x) for x in v.values())


def check_meta(meta: Any, path: str, for_resume: bool = False, with_data: bool = False) -> None:
    """Every field of the metadata has the right type and range (the model-independent part
    of checkpoint validation); raises :class:`CheckpointError` naming the field. A model
    needs ``data_shape`` and ``seed``; resuming training also ``iteration``, ``dataset``
    and ``dtype`` (``train`` always writes them all); resuming or evaluating on the
    dataset (``with_data``) needs ``data_shape`` to be that of the dataset's images."""
    from kaem.backend import DTYPES
    from kaem.datasets import DATASETS, dataset_shape
    from kaem.objectives import MODES

    if not isinstance(meta, dict):
        raise _fail(path, "meta", f"expected a JSON object, got {type(meta).__name__}")
    for key in ("data_shape", "seed") + (("iteration", "dataset", "dtype") if for_resume else ()):
        if key not in meta:
            raise _fail(path, f"meta.{key}", "missing" + (" (needed to resume)" if for_resume else ""))
    checks = {  # field -> (valid?, what a valid value is)
        "iteration": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "dataset": (lambda v: v in DATASETS or v == "", f"one of {', '.join(DATASETS)} (or \"\" from the Python API)"),
        "data_shape": (lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_is_int(d) and d > 0 for d in v),
                       "a list of 1 to 4 positive integers"),
        "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
        "elapsed_s": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
        "last_grid_update": (lambda v: _is_int(v) and 0 <= v <= meta.get("iteration", 0), "an integer in 0..iteration"),
        "mode": (lambda v: v in MODES, f"one of {', '.join(MODES)}"),
        "sampler_state": (lambda v: _number_lists(v, positive=True), "an object of lists of positive numbers"),
        "planned_epochs": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
        "row_pending": (lambda v: isinstance(v, bool), "true or false"),
        "epoch_acc": (lambda v: v is None or (isinstance(v, dict) and _number_lists(
            {k: x for k, x in v.items() if k != "grid_updated"}, finite=False) and _is_int(v.get("grid_updated", 0))),
            "null or an object of lists of numbers"),
        "last_good": (lambda v: isinstance(v, bool), "true or false"),
        "streams": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "ranks": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "parallel": (lambda v: v in ("data", "temperatures"), "data or temperatures"),
        "data": (lambda v: v is None or (isinstance(v, dict) and (v.get("resize") is None or (
            _is_int(v["resize"]) and v["resize"] >= 2))), "null or an object whose resize is null or an integer >= 2"),
        "data_dir": (lambda v: v is None or (isinstance(v, str) and v != "" and "\0" not in v),
                     "null or a folder path"),
        "n_test": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    }
    for key, (ok, what) in checks.items():
        if key in meta and not ok(meta[key]):
            raise _fail(path, f"meta.{key}", f"{json.dumps(meta[key])[:80]} is not {what}")
    resize = (meta.get("data") or {}).get("resize")
    if (for_resume or with_data) and meta.get("dataset") and \
            tuple(meta["data_shape"]) != tuple(dataset_shape(meta["dataset"], resize)):
        raise _fail(path, "meta.data_shape", f"{meta['data_shape']} is not the shape of {meta['dataset']} images "
                                             f"{list(dataset_shape(meta['dataset'], resize))}")
    problem = _check_rng_state(meta.get("rng_state"))
    if problem:
        raise _fail(path, "meta.rng_state", problem)


def _check_entries(data: dict[str, np.ndarray], path: str) -> None:
    """Header entries are 0-d of the right kind; array groups hold finite numbers."""
    for key in _HEADER:
        if key not in data:
            raise _fail(path, key, "missing")
    kinds = {"format": "U", "version": "iu", "config": "U", "meta": "U"}
    for key, kind in kinds.items():
        if data[key].shape != () or data[key].dtype.kind not in kind:
            raise _fail(path, key, f"expected a single {'string' if kind == 'U' else 'integer'}, got an array "
                                   f"of shape {data[key].shape} and dtype {data[key].dtype}")
    for key, arr in data.items():
        if key in _HEADER:
            continue
        prefix = next((g for g in GROUPS if key.startswith(g)), None)
        if prefix is None:
            raise _fail(path, key, f"unexpected entry (valid: {', '.join(_HEADER)} and "
                                   f"{', '.join(g + '<name>' for g in GROUPS)})")
        if key == _OPT_PREFIX + "type":  # the one string of the groups: the optimiser's name
            if arr.shape != () or arr.dtype.kind != "U":
                raise _fail(path, key, f"expected a single string, got an array of shape {arr.shape} "
                                       f"and dtype {arr.dtype}")
            continue
        if arr.dtype.kind not in "fiub":
            raise _fail(path, key, f"expected numbers, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and (np.isnan(arr).any() if prefix == "buffer/" else not np.isfinite(arr).all()):
            raise _fail(path, key, "holds NaN or inf values: the file was saved from a diverged model "
                                   "(or damaged)")


def _upgrade(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A version-1 file (Adam's state under adam/, without type and rate) in the version-2
    layout; other files unchanged."""
    v = data.get("version")
    if v is None or v.shape != () or v.dtype.kind not in "iu" or int(v) != 1:
        return data
    out = {("optim/" + k[len("adam/"):] if k.startswith("adam/") else k): a for k, a in data.items()}
    out.update({"version": np.array(VERSION), "optim/type": np.array("adam")})
    return out


def check_checkpoint_path(path: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a file: a missing path is named, a
    folder is said to be one, with the run's checkpoint ``<folder>/ckpt.npz`` offered
    ("did you mean") when it exists."""
    if os.path.isdir(path):
        inside = os.path.join(path, CKPT_NAME)
        if os.path.isfile(inside):
            raise CheckpointError(f"{path!r} is a folder, not a checkpoint; did you mean {inside}?")
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint, and holds no run checkpoint {inside}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")


def load_checkpoint(path: str, for_resume: bool = False, with_data: bool = False) -> dict[str, Any]:
    """Read and validate a checkpoint into host arrays.

    Returns a dict with ``path``, ``config`` (INI text), ``meta`` (dict), ``params``,
    ``buffers`` and ``optimizer`` (name -> array); ``for_resume`` also requires the
    training metadata, ``for_resume`` and ``with_data`` (evaluation) that the stored data
    shape is the dataset's (missing optional fields of a model-only file get defaults: iteration
    0, dataset "", the arrays' dtype). Every problem — a missing, truncated,
    corrupt or foreign file, a missing or malformed entry or metadata field, a garbage RNG
    state, non-finite numbers — raises :class:`CheckpointError`, one line naming the file
    and the field. What depends on the model (array names, shapes and dtypes) is checked by
    :func:`restore_model`, the optimiser state by the optimiser's ``load_state_dict``.
    """
    check_checkpoint_path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
        if not magic.startswith((_ZIP_MAGIC, _NPY_MAGIC)):  # text, a pickle, an image: not ours
            raise CheckpointError(f"{path!r} is not a KAEM checkpoint (not an .npz archive)")
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path!r} is not a KAEM checkpoint (a single .npy array, not an .npz archive)")
        with z:
            data = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, AttributeError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt: {e}") from None
    except MemoryError:
        raise CheckpointError(f"checkpoint {path!r} is too large for the memory available") from None
    if "format" not in data or data["format"].shape != () or str(data["format"]) != FORMAT:
        raise CheckpointError(f"{path!r} is not a KAEM checkpoint (no '{FORMAT}' format tag)")
    data = _upgrade(data)
    _check_entries(data, path)
    if int(data["version"]) != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint version {int(data['version'])}; this code reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError as e:
        raise _fail(path, "meta", f"not valid JSON ({e})") from None
    check_meta(meta, path, for_resume, with_data)
    out = {"path": path, "config": str(data["config"]), "meta": meta}
    for prefix, name in GROUPS.items():
        out[name] = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    dtypes = {v.dtype.name for v in out["params"].values()}  # a partial (API-made) file: defaults
    meta.setdefault("dtype", dtypes.pop() if len(dtypes) == 1 and dtypes <= {"float32", "float64"} else "float32")
    meta.setdefault("iteration", 0)
    meta.setdefault("dataset", "")
    return out


def checkpoint_config(ckpt: dict[str, Any]) -> Any:
    """The ``Config`` stored in a loaded checkpoint (CheckpointError naming the file if the
    text does not parse or fails the schema)."""
    from kaem.config import ConfigError, config_from_ini

    try:
        return config_from_ini(ckpt["config"])
    except ConfigError as e:
        raise _fail(ckpt.get("path", "?"), "config", str(e)) from None


def restore_model(ckpt: dict[str, Any], be: Any) -> Any:
    """Rebuild the ``KAEM`` stored in a loaded checkpoint on backend ``be``: the stored
    config builds the model, whose parameter and buffer names, shapes and dtypes the stored
    arrays must match exactly (:class:`CheckpointError` naming the field otherwise)."""
    from kaem.objectives import objective_mode
    from kaem.model import KAEM

    path = ckpt.get("path", "?")
    cfg = checkpoint_config(ckpt)
    mode = ckpt["meta"].get("mode")
    if mode is not None and mode != objective_mode(cfg):
        raise _fail(path, "meta.mode", f"{mode!r} but the stored config selects {objective_mode(cfg)!r}")
    try:
        model = KAEM(cfg, tuple(ckpt["meta"]["data_shape"]), be, seed=int(ckpt["meta"]["seed"]))
    except MemoryError:
        raise _fail(path, "config", "the model it describes does not fit in memory") from None
    for prefix, mine, theirs in (("param/", model.parameters(), ckpt["params"]),
                                 ("buffer/", model.buffers(), ckpt["buffers"])):
        for k in sorted(set(mine) | set(theirs)):
            if k not in theirs:
                raise _fail(path, prefix + k, "missing (the model its config builds has it)")
            if k not in mine:
                raise _fail(path, prefix + k, "unexpected (the model its config builds has no such array)")
            a, b = mine[k], theirs[k]
            if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != b.dtype:
                raise _fail(path, prefix + k, f"shape {tuple(b.shape)} {b.dtype}, but the model its config builds "
                                              f"has {tuple(a.shape)} {np.dtype(a.dtype)}")
    model.load_arrays(ckpt["params"], ckpt["buffers"])
    return model


def restore_optimizer(opt: Any, ckpt: dict[str, Any]) -> None:
    """Load the stored optimiser state into ``opt`` (its ``load_state_dict`` checks it); a
    last_good snapshot, which has none, cannot be resumed."""
    path = ckpt.get("path", "?")
    if ckpt["meta"].get("last_good"):
        raise CheckpointError(f"checkpoint {path} is a last_good snapshot (the parameters of the last finite "
                              "forward pass, without optimiser state): sample or evaluate it, or resume from "
                              "the run's ckpt.npz instead")
    try:
        opt.load_state_dict(ckpt["optimizer"])
    except OptimizerStateError as e:  # names the entry, as the field checks of load_checkpoint do
        raise _fail(path, _OPT_PREFIX + e.field, f"optimiser state: {e.problem}") from None
    except KeyError as e:
        raise _fail(path, "optimiser state", f"missing entry {_OPT_PREFIX}{e.args[0]}") from None
    except (ValueError, TypeError, IndexError) as e:
        raise _fail(path, "optimiser state", str(e)) from None
