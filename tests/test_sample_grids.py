"""Per-epoch sample grids (TRAINING.gen_every): which epochs get one, fixed latents, and a
resumed run's grids equal to an uninterrupted one's."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

import cli
from kaem.backend import get_backend
from kaem.run.checkpoint import load_checkpoint, restore_model
from kaem.plots import GRID_TARGET_PX, grid_scale, image_grid, save_sample_grid
from kaem.run.trainer import SAMPLE_GRID_N, sample_grid_rng
from test_cli import TINY


def _train(out, data_dir, *extra):
    return cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "100",
                     "--n-test", "20", "--batch-size", "50", "--out", str(out), *TINY, *extra])


def _png(path):
    return np.asarray(Image.open(path))


def _nearest(grid, k):
    """Nearest-neighbour enlargement by an integer k, written out independently of kaem.plots."""
    return np.repeat(np.repeat(grid, k, axis=0), k, axis=1)


class _Fixed:
    """A stand-in model whose ``generate`` returns fixed images (n, C, H, W) in [0, 1]."""

    def __init__(self, shape, seed=0):
        self.data_shape = shape
        self.images = np.random.default_rng(seed).uniform(size=(64,) + shape).astype(np.float32)

    def generate(self, n, rng):
        return self.images[:n]


def test_grids_every_gen_every_epochs_and_equal_after_resume(tmp_path, data_dir):
    assert _train(tmp_path / "straight", data_dir, "--epochs", "2") == 0
    grids = sorted(os.listdir(tmp_path / "straight" / "samples"))
    assert grids == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]  # untrained, then every epoch
    # the last grid is re-derivable: the final model pushed through the documented stream
    ckpt = load_checkpoint(str(tmp_path / "straight" / "ckpt.npz"))
    model = restore_model(ckpt, get_backend("cpu", "float32"))
    x = model.generate(SAMPLE_GRID_N, sample_grid_rng(model.be, 0)).reshape((SAMPLE_GRID_N,) + model.data_shape)
    last = _png(tmp_path / "straight" / "samples" / "epoch_002.png")
    np.testing.assert_array_equal(last, _nearest(image_grid(x), 2))  # 64 tiles: 242 px, written 2x (484 px)
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


def test_grid_png_of_64_mnist_images_is_a_nearest_neighbour_2x_of_the_grid(tmp_path):
    """64 images of 28×28 tile to 8 × (28 + 2) + 2 = 242 px; the PNG is that grid enlarged by
    the integer factor whose result is nearest 512 px (2: 484 px; 3 would give 726), each
    pixel a 2 × 2 block, while the returned images keep the model's size."""
    model = _Fixed((1, 28, 28))
    path = str(tmp_path / "g.png")
    x = save_sample_grid(path, model, 64, None)
    assert x.shape == (64, 1, 28, 28)
    np.testing.assert_array_equal(x, model.images)
    grid = image_grid(x)
    assert grid.shape == (242, 242)
    png = _png(path)
    assert png.shape == (484, 484) and abs(png.shape[0] - GRID_TARGET_PX) <= 242 // 2
    np.testing.assert_array_equal(png, _nearest(grid, 2))
    assert grid_scale(242, 242) == 2 and grid_scale(92, 122) == 4  # the longer side decides


def test_grid_png_in_colour_is_enlarged_the_same_way(tmp_path):
    model = _Fixed((3, 6, 6))
    path = str(tmp_path / "c.png")
    x = save_sample_grid(path, model, 4, None)  # 2 × (6 + 2) + 2 = 18 px -> 28x, 504 px
    png = _png(path)
    assert png.shape == (504, 504, 3)
    np.testing.assert_array_equal(png, _nearest(image_grid(x), 28))


def test_large_grid_is_not_rescaled(tmp_path):
    """A grid of 512 px or more is written as it is: 64 images of 64×64 tile to 530 px."""
    model = _Fixed((1, 64, 64))
    path = str(tmp_path / "big.png")
    x = save_sample_grid(path, model, 64, None)
    np.testing.assert_array_equal(_png(path), image_grid(x))
    assert _png(path).shape == (530, 530)
    assert grid_scale(530, 530) == 1 and grid_scale(512, 40) == 1 and grid_scale(2000, 3000) == 1  # never down
