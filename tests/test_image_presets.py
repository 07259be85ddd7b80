"""The natural-image presets svhn, cifar10 and celeba (method §5, the reference's INI files):
``cli.py train --dataset svhn|cifar10|celeba --mode ula|thermo`` on tiny files in the real
formats, the stored config, and RGB sample grids."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import cli
from datafiles import write_celeba, write_cifar10, write_svhn
from kaem.run.checkpoint import load_checkpoint
from kaem.config import load_config
from kaem.build import generator_kind, prior_kind

WRITERS = {"svhn": write_svhn, "cifar10": write_cifar10, "celeba": write_celeba}
# the presets' model, with the sampler, the quadrature and the evaluation cut down
FAST = ["--set", "POST_LANGEVIN.iters=2", "--set", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2",
        "--set", "TRAINING.eval_importance_samples=4", "--set", "EbmModel.GaussQuad_nodes=20",
        "--set", "TRAINING.gen_every=0"]


@pytest.mark.parametrize("preset,sizes", [("svhn", [1, 4, 8, 16, 32]), ("cifar10", [1, 8, 16, 32, 32]),
                                          ("celeba", [1, 4, 8, 16, 32, 64])])
def test_presets_follow_the_reference(preset, sizes):
    """Mixture prior P = 40 for each of Q = 81 latents (FFT G = 50, ±1.5), conv generator whose
    layer sizes end at the data's, σ = 0.3, σ_n = 0.01, ULA by default (thermo: the right-sum
    rule), Adam 2e-4."""
    from kaem.generators.conv import spatial_sizes

    cfg = load_config(preset)
    assert (prior_kind(cfg), generator_kind(cfg)) == ("mixture", "cnn")
    assert cfg["EbmModel"]["layer_widths"] == (40, 81) and cfg["EbmModel"]["spline_function"] == "FFT"
    assert cfg["EbmModel"]["grid_range"] == (-1.5, 1.5) and cfg["EbmModel"]["GaussQuad_nodes"] == 200
    c = cfg["CNN"]
    assert spatial_sizes(c["kernel_sizes"], c["strides"], c["paddings"]) == sizes
    g = cfg["GeneratorModel"]
    assert (g["generator_variance"], g["generator_noise"]) == (0.3, 0.01)
    assert cfg["POST_LANGEVIN"]["use_langevin"] and cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"] == 1
    assert cfg["THERMODYNAMIC_INTEGRATION"]["integration_rule"] == "right"  # chosen on evidence, README
    assert cfg["OPTIMIZER"]["learning_rate"] == 0.0002


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ula", "thermo"])
@pytest.mark.parametrize("dataset", list(WRITERS))
def test_train_and_sample_on_real_formats(tmp_path, capsys, dataset, mode):
    WRITERS[dataset](tmp_path / "data")
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", dataset, "--mode", mode, "--data-dir", str(tmp_path / "data"),
                     "--no-download", "--n-train", "2", "--n-test", "2", "--batch-size", "2", "--epochs", "1",
                     "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    stored = load_checkpoint(str(out / "ckpt.npz"))["config"]
    assert "use_mixture_prior = true" in stored and "use_cnn_lkhood = true" in stored
    png = tmp_path / "s.png"
    assert cli.main(["sample", "--ckpt", str(out / "ckpt.npz"), "--n", "4", "--out", str(png)]) == 0
    img = Image.open(png)
    side = 64 if dataset == "celeba" else 32
    k = 4 if dataset == "celeba" else 7  # the grid enlarged to the multiple of its side nearest 512 px
    assert img.mode == "RGB" and img.size == (k * (2 * side + 6), k * (2 * side + 6))  # a 2×2 grid, 2 px gaps
    assert np.asarray(img).std() > 0
