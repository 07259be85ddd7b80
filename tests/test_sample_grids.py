"""Per-epoch sample grids (TRAINING.gen_every): which epochs get one, fixed latents, and a
resumed run's grids equal to an uninterrupted one's."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

import cli
from kaem.backend import get_backend
from kaem.run.checkpoint import load_checkpoint, restore_model
from kaem.plots import image_grid
from kaem.run.trainer import SAMPLE_GRID_N, sample_grid_rng
from test_cli import TINY


def _train(out, data_dir, *extra):
    return cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "100",
                     "--n-test", "20", "--batch-size", "50", "--out", str(out), *TINY, *extra])


def _png(path):
    return np.asarray(Image.open(path))


def test_grids_every_gen_every_epochs_and_equal_after_resume(tmp_path, data_dir):
    assert _train(tmp_path / "straight", data_dir, "--epochs", "2") == 0
    grids = sorted(os.listdir(tmp_path / "straight" / "samples"))
    assert grids == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]  # untrained, then every epoch
    # the last grid is re-derivable: the final model pushed through the documented stream
    ckpt = load_checkpoint(str(tmp_path / "straight" / "ckpt.npz"))
    model = restore_model(ckpt, get_backend("cpu", "float32"))
    x = model.generate(SAMPLE_GRID_N, sample_grid_rng(model.be, 0)).reshape((SAMPLE_GRID_N,) + model.data_shape)
    last = _png(tmp_path / "straight" / "samples" / "epoch_002.png")
    np.testing.assert_array_equal(last, image_grid(x))
    assert not np.array_equal(last, _png(tmp_path / "straight" / "samples" / "epoch_001.png"))
    # stopped after one epoch and resumed: the same grids, byte for byte in pixels
    assert _train(tmp_path / "resumed", data_dir, "--epochs", "1") == 0
    assert cli.main(["train", "--resume", str(tmp_path / "resumed" / "ckpt.npz"), "--epochs", "2",
                     "--data-dir", data_dir, "--no-download", "--n-test", "20"]) == 0
    for g in grids:
        np.testing.assert_array_equal(_png(tmp_path / "resumed" / "samples" / g),
                                      _png(tmp_path / "straight" / "samples" / g))


def test_gen_every_two_and_zero(tmp_path, data_dir):
    assert _train(tmp_path / "two", data_dir, "--epochs", "3", "--set", "TRAINING.gen_every=2") == 0
    assert sorted(os.listdir(tmp_path / "two" / "samples")) == ["epoch_000.png", "epoch_002.png"]
    assert _train(tmp_path / "none", data_dir, "--epochs", "1", "--set", "TRAINING.gen_every=0") == 0
    assert not os.path.exists(tmp_path / "none" / "samples")


def test_config_stored_before_gen_every_still_loads():
    """Checkpoints written before gen_every and the CNN/MLP sections existed keep loading
    (with the defaults, which do what the code did then); any other missing key is still
    an error."""
    import pytest

    from kaem.config import ConfigError, config_from_ini, config_to_ini, load_config

    cfg = load_config("fmnist")
    text = config_to_ini(cfg)
    kept = "\n\n".join(b for b in text.split("\n\n") if not b.startswith(("[CNN]", "[MLP]")))
    old = "\n".join(line for line in kept.splitlines() if not line.startswith("gen_every"))
    assert "gen_every" not in old and "[CNN]" not in old and config_from_ini(old) == cfg
    with pytest.raises(ConfigError, match="N_test"):
        config_from_ini("\n".join(line for line in old.splitlines() if not line.startswith("N_test")))
