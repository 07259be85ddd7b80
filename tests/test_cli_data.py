"""CLI data paths: make-darcy, training on darcy with --resize (the scaling and the size go
into the checkpoint and come back in eval/resume), per-sample PNGs and colour grids."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cli
from kaem.run.checkpoint import load_checkpoint, save_checkpoint
from kaem.config import config_to_ini
from kaem.datasets import darcy
from kaem.plots import image_grid, save_pngs, to_uint8

TINY = ["--set", "EbmModel.layer_widths=3,7", "--set", "GeneratorModel.widths=7,9",
        "--set", "EbmModel.grid_size=5", "--set", "GeneratorModel.grid_size=5",
        "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=20"]


def test_make_darcy_command(tmp_path, capsys):
    assert cli.main(["make-darcy", "--n", "5", "--resolution", "6", "--seed", "4", "--data-dir", str(tmp_path)]) == 0
    path = tmp_path / "darcy" / "darcy_r6_n5_s4.npz"
    assert str(path) in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(path)["u"], darcy.generate(5, 6, 4)[1])
    assert cli.main(["make-darcy", "--n", "5", "--resolution", "1", "--data-dir", str(tmp_path)]) == 2
    assert "error: --resolution must be at least 2" in capsys.readouterr().err


@pytest.fixture
def darcy_run(tmp_path, monkeypatch):
    monkeypatch.setattr(darcy, "DEFAULT_N", 60)
    monkeypatch.setattr(darcy, "N_TEST", 10)
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "darcy", "--resize", "8", "--data-dir", str(tmp_path / "data"),
                     "--n-train", "50", "--n-test", "10", "--batch-size", "25", "--epochs", "1",
                     "--out", str(out), *TINY])
    assert code == 0
    return tmp_path, out / "ckpt.npz"


def test_darcy_training_stores_size_and_scaling(darcy_run, capsys):
    tmp_path, ckpt = darcy_run
    meta = load_checkpoint(str(ckpt))["meta"]
    u = np.load(tmp_path / "data" / "darcy" / "darcy_r8_n60_s0.npz")["u"]
    assert meta["data"] == {"resize": 8, "file": "darcy_r8_n60_s0.npz",
                            "u_min": float(u[:50].min()), "u_max": float(u[:50].max())}
    assert meta["data_shape"] == [1, 8, 8]
    assert cli.main(["eval", "--ckpt", str(ckpt), "--data-dir", str(tmp_path / "data"), "--samples", "20",
                     "--n-test", "10", "--json"]) == 0  # finds the 8×8 data from the checkpoint's resize
    assert json.loads(capsys.readouterr().out)["n_test"] == 10
    assert cli.main(["train", "--resume", str(ckpt), "--resize", "16", "--data-dir", str(tmp_path / "data")]) == 2
    assert "--resize 16 differs" in capsys.readouterr().err


def test_sample_png_dir_greyscale(darcy_run, tmp_path, capsys):
    _, ckpt = darcy_run
    assert cli.main(["sample", "--ckpt", str(ckpt), "--n", "5", "--out", str(tmp_path / "g.png"),
                     "--png-dir", str(tmp_path / "pngs")]) == 0
    files = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert files == [f"{i:06d}.png" for i in range(5)]
    img = Image.open(tmp_path / "pngs" / "000003.png")
    assert img.mode == "L" and img.size == (8, 8)


def test_sample_png_dir_and_grid_in_colour(tmp_path, be64):
    from conftest import tiny_config
    from kaem.model import KAEM

    cfg = tiny_config()
    model = KAEM(cfg, (3, 6, 6), be64, seed=0)
    ckpt = tmp_path / "rgb.npz"
    save_checkpoint(str(ckpt), model.parameters(), model.buffers(), {}, config_to_ini(cfg),
                    {"iteration": 0, "seed": 0, "dataset": "svhn", "data_shape": [3, 6, 6], "dtype": "float64"})
    assert cli.main(["sample", "--ckpt", str(ckpt), "--n", "4", "--out", str(tmp_path / "grid.png"),
                     "--png-dir", str(tmp_path / "pngs"), "--npy"]) == 0
    x = np.load(tmp_path / "grid.npy")
    grid = Image.open(tmp_path / "grid.png")
    k = 28  # the 18 px grid is written enlarged 28x (504 px, the multiple nearest 512)
    assert grid.mode == "RGB" and grid.size == (k * (2 * 8 + 2), k * (2 * 8 + 2))
    small = np.asarray(grid)[::k, ::k]
    np.testing.assert_array_equal(np.asarray(grid), np.repeat(np.repeat(small, k, 0), k, 1))  # k x k blocks
    np.testing.assert_array_equal(small[2:8, 10:16], to_uint8(x[1:2])[0])  # tile 1: row 0, column 1
    one = Image.open(tmp_path / "pngs" / "000002.png")
    assert one.mode == "RGB" and one.size == (6, 6)
    np.testing.assert_array_equal(np.asarray(one), to_uint8(x[2:3])[0])


def test_image_grid_layout_and_channels():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.2, (5, 3, 4, 3))
    g = image_grid(x, nrow=2, pad=1)
    assert g.shape == (3 * 5 + 1, 2 * 4 + 1, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[11:15, 1:4], to_uint8(x[4:5])[0])  # tile 4: row 2, column 0
    assert not g[11:15, 5:8].any() and not g[0].any() and not g[:, 4].any()  # empty tile, padding
    grey = image_grid(x[:, :1], nrow=3)
    assert grey.ndim == 2
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_uint8(np.zeros((1, 2, 3, 3)))


def test_save_pngs_round_trip(tmp_path):
    x = np.random.default_rng(1).uniform(0, 1, (3, 1, 5, 7))
    paths = save_pngs(str(tmp_path / "d"), x)
    back = np.stack([np.asarray(Image.open(p)) for p in paths])
    np.testing.assert_array_equal(back, to_uint8(x))


def test_compare_figure(darcy_run, tmp_path, capsys):
    data_dir, ckpt = darcy_run
    out = tmp_path / "cmp.png"
    assert cli.main(["compare", "--ckpt", str(ckpt), "--out", str(out), "--n", "3", "--n-test", "10",
                     "--data-dir", str(data_dir / "data")]) == 0
    assert "10 test images" in capsys.readouterr().out
    img = Image.open(out)
    assert img.mode == "RGB" and img.size[0] > 4 * 8 and img.size[1] > 3 * 8


def test_colormap_ends_and_clipping():
    from kaem.plots import colormap

    c = colormap(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]))
    assert c.shape == (5, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c[0], c[1])
    np.testing.assert_array_equal(c[3], c[4])
    assert tuple(c[1]) == (68, 1, 84) and tuple(c[3]) == (253, 231, 37) and tuple(c[2]) == (33, 144, 141)
