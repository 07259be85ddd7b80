"""Drawing from a trained checkpoint: ``sample`` (a PNG grid, and on request the raw array
and one PNG per sample) and ``compare`` (test images against as many generated ones, with
their per-pixel mean and standard deviation).

Both rebuild the model a checkpoint stores (``kaem/run/checkpoint.py``) on the device
asked for, in the dtype it was trained in; every file is written atomically.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from kaem.run.data import DataSource, load_splits, stored_data_dir, stored_n_test
from kaem.run.failures import CommandError

Say = Callable[[str], None]


def check_png_path(out: str) -> None:
    """A CommandError unless ``out`` names a .png file."""
    if not out.lower().endswith(".png"):
        raise CommandError(f"--out must be a .png path, got {out!r}")


def load_model(ckpt_path: str, device: str, with_data: bool = False) -> tuple[dict[str, Any], Any, Any]:
    """(checkpoint, backend, model) of the checkpoint at ``ckpt_path`` on ``device``, in the
    dtype it was saved in; ``with_data``: its data shape must be its dataset's."""
    from kaem.backend import get_backend
    from kaem.run.checkpoint import load_checkpoint, restore_model

    ckpt = load_checkpoint(ckpt_path, with_data=with_data)
    be = get_backend(device, ckpt["meta"].get("dtype", "float32"))
    return ckpt, be, restore_model(ckpt, be)


def sample_checkpoint(ckpt_path: str, n: int, out: str, npy: bool = False, png_dir: str | None = None,
                      device: str = "cpu", seed: int = 0, say: Say = print) -> dict[str, Any]:
    """Draw ``n`` samples x ~ p(x) = ∫ p(x|z) π(z) dz (generator means, shape (n, C, H, W))
    from the checkpoint into the PNG grid ``out``; ``npy``: also the array as OUT.npy;
    ``png_dir``: also one PNG per sample (000000.png, ...). Returns ``{"output": out}``.
    A model whose samples are not finite has diverged: a CommandError, nothing written."""
    from kaem.plots import NonFiniteImages, save_pngs, save_sample_grid
    from kaem.run.atomic import atomic_open

    _, be, model = load_model(ckpt_path, device)
    check_png_path(out)
    try:
        x = save_sample_grid(out, model, n, be.rng(seed), require_finite=True)
    except NonFiniteImages as e:
        raise CommandError(f"the model in {ckpt_path} has diverged: {e}; nothing written") from None
    say(f"wrote {out} ({n} samples)")
    if png_dir:
        save_pngs(png_dir, x)
        say(f"wrote {n} PNGs to {png_dir}/ (000000.png, ...)")
    if npy:
        path = out[:-4] + ".npy"
        with atomic_open(path, "wb", suffix=".npy") as fh:
            np.save(fh, x)
        say(f"wrote {path} {x.shape}")
    return {"output": out}


def compare_checkpoint(ckpt_path: str, out: str, n: int = 8, n_test: int | None = None, device: str = "cpu",
                       seed: int = 0, data_dir: str | None = None, download: bool = True, offline_hint: str = "",
                       say: Say = print) -> dict[str, Any]:
    """The figure of ``n`` test images above ``n`` generated ones, and the per-pixel mean and
    standard deviation of M test images and M samples (M = ``n_test``; by default the
    checkpoint's own test count and data folder, ``kaem/run/data.py``), written to ``out``."""
    from kaem.backend import to_numpy
    from kaem.plots import real_vs_generated, save_image

    check_png_path(out)
    ckpt, be, model = load_model(ckpt_path, device)
    meta = ckpt["meta"]
    source = DataSource(stored_data_dir(meta, data_dir), download, offline_hint)
    _, x_test = load_splits(meta["dataset"], source, None, stored_n_test(meta, n_test, model.cfg),
                            (meta.get("data") or {}).get("resize"))
    m = x_test.shape[0]
    gen = to_numpy(model.generate(m, be.rng(seed))).reshape((m,) + model.data_shape)
    title = (f"{meta['dataset']}: real (test) vs generated, {os.path.basename(ckpt_path)} at iteration "
             f"{int(meta['iteration'])}")
    save_image(out, real_vs_generated(x_test, gen, n, title))
    say(f"wrote {out} ({m} test images, {m} samples)")
    return {"output": out}
