"""The presets: per-dataset overrides of the schema defaults (``DATASET_DEFAULTS``).

A preset is written exactly as an INI file would be, ``{"dataset": {"SECTION": {"key": "value"}}}``,
and is applied on top of the schema defaults by ``default_config``. A new dataset or variant is
one entry; a preset named "<data>-<variant>" trains on <data> (``preset_dataset``).
"""
from __future__ import annotations


# The reference's MNIST/FMNIST runs use RBF with G = 20 (the schema defaults) or FFT with
# G = 50 in both the prior and the generator (method §5).
# FFT presets use 200 Gauss–Legendre nodes (the reference's FFT value for SVHN/CelebA): after
# one FMNIST epoch with 100 nodes log Z was already off by 1e-2 (2e-4 with 200).
_FFT = {"EbmModel": {"spline_function": "FFT", "grid_size": "50", "GaussQuad_nodes": "200"},
        "GeneratorModel": {"spline_function": "FFT", "grid_size": "50"}}
# The reference's natural-image runs (thezettascale's svhn/cifar/celeba_config.ini, method §5):
# for each of Q = 81 latents a mixture of P = 40 components, FFT G = 50 on ±1.5 with a
# leakyrelu base and 200 nodes; a conv-transpose generator (the [CNN] defaults are the SVHN
# stack); σ = 0.3, σ_n = 0.01; ULA posterior, η = 0.005 (--mode thermo: 5 temperatures,
# p 1 -> 8, right-sum rule: it beat left and trapezoid on held-out log-likelihood on
# fmnist32, README); 20 000 images, 40 epochs of 100, Adam 2e-4.
def _images(cnn: dict, langevin_steps: str = "40") -> dict:
    """The natural-image preset with these [CNN] keys and Langevin steps per posterior sample."""
    return {"EbmModel": {"layer_widths": "40, 81", "base_activation": "leakyrelu", "spline_function": "FFT",
                         "grid_size": "50", "grid_range": "-1.5, 1.5", "ε_scale": "1", "GaussQuad_nodes": "200"},
            "MixtureModel": {"use_mixture_prior": "true"},
            "GeneratorModel": {"widths": "81, 162", "generator_variance": "0.3", "generator_noise": "0.01"},
            "CNN": {"use_cnn_lkhood": "true", **cnn},
            "POST_LANGEVIN": {"use_langevin": "true", "initial_step_size": "0.005", "iters": langevin_steps},
            "THERMODYNAMIC_INTEGRATION": {"p_start": "1", "p_end": "8", "N_langevin_per_temp": langevin_steps,
                                          "integration_rule": "right"},
            "TRAINING": {"N_train": "20000", "N_epochs": "40"},
            "OPTIMIZER": {"learning_rate": "0.0002"}}


# The deep-prior (Pang et al. 2020) presets follow the reference's *_pang_config.ini (the
# thezettascale copies, method §5): energy 100 -> 200 -> 200 -> 1 of KAN layers (FFT, G = 50,
# gelu, range ±1.5), conv-transpose generator, prior and posterior ULA, Adam 2e-4, batch
# 100, 20 000 images, 40 epochs. Deviations: π0 = N(0, I) (the reference's flat "ebm" base
# leaves the density improper and nothing to start prior Langevin from), and num_temps = 1
# (the files also set 5 temperatures, which here would select thermodynamic integration;
# the method's PANG row is ULA).
_PANG = {"EbmModel": {"layer_widths": "100, 200, 200, 1", "deep_body": "kan", "π_0": "gaussian",
                      "base_activation": "gelu", "spline_function": "FFT", "grid_size": "50",
                      "grid_range": "-1.5, 1.5", "ε_scale": "1"},
         "GeneratorModel": {"widths": "100", "generator_variance": "0.3", "generator_noise": "0.01"},
         "CNN": {"use_cnn_lkhood": "true", "hidden_feature_dims": "256, 128, 64", "strides": "1, 2, 2, 2",
                 "kernel_sizes": "4, 4, 4, 4", "paddings": "0, 1, 1, 1", "activation": "leakyrelu"},
         "GRID_UPDATING": {"update_llhood_grid": "false", "grid_update_decay": "0.9999"},
         "PRIOR_LANGEVIN": {"step_size": "0.16", "iters": "60"},
         "POST_LANGEVIN": {"use_langevin": "true", "initial_step_size": "0.005", "iters": "40"},
         "TRAINING": {"N_train": "20000", "N_test": "100", "N_epochs": "40", "checkpoint_every": "8"},
         "OPTIMIZER": {"learning_rate": "0.0002"}}


def _pang(**sections: dict) -> dict:
    """_PANG with some sections' keys replaced."""
    return {name: {**_PANG.get(name, {}), **sections.get(name, {})} for name in {**_PANG, **sections}}


# The deep prior on MNIST/FMNIST (CPU-sized): Pang et al.'s MLP energy 100 -> 200 -> 200 -> 1
# (GELU), π0 = N(0, I), KAN generator 100 -> 82 -> 784; everything else as the dataset's
# defaults (IS, S = 100). Its univariate counterpart: EbmModel.layer_widths = 20, 100 and
# GeneratorModel.widths = 100, 82.
_DEEP = {"EbmModel": {"layer_widths": "100, 200, 200, 1", "deep_body": "mlp", "base_activation": "gelu",
                      "π_0": "gaussian"},
         "GeneratorModel": {"widths": "100, 82"}}
DATASET_DEFAULTS: dict = {
    "mnist": {},
    "fmnist": {},
    "mnist-fft": _FFT,
    "fmnist-fft": _FFT,
    "mnist32": {},  # MNIST / Fashion-MNIST zero-padded to 32×32 (for 32×32 generators)
    "fmnist32": {},
    "svhn": _images({}),
    "cifar10": _images({"hidden_feature_dims": "256, 128, 64", "strides": "1, 2, 2, 1", "kernel_sizes": "8, 4, 4, 3"}, "60"),
    "celeba": _images({"hidden_feature_dims": "256, 128, 64, 32", "strides": "1, 2, 2, 2, 2",
                       "kernel_sizes": "4, 4, 4, 4, 4", "paddings": "0, 1, 1, 1, 1"}),
    "fmnist32-conv": _images({}),  # the svhn model on Fashion-MNIST padded to 32×32 (one channel)
    # The reference's darcy_flow_config.ini (PritRaj1 copy; the older thezettascale copy has
    # generator widths 201,202 that contradict Q): IS, RBF G = 30 in prior and generator,
    # lognormal π0, 1 000 training fields, 250 epochs of 10 iterations. Adam, not its Nesterov +
    # step decay, which collapses this model in the first epoch (README, Darcy figures).
    "darcy": {"EbmModel": {"grid_size": "30", "ε_scale": "1", "π_0": "lognormal"},
              "GeneratorModel": {"grid_size": "30"},
              "TRAINING": {"N_train": "1000", "N_test": "100", "N_epochs": "250", "eps": "0.001"}},
    "mnist-deep": _DEEP,
    "fmnist-deep": _DEEP,
    "svhn-pang": _pang(PRIOR_LANGEVIN={"step_size": "0.1"}),
    "cifar10-pang": _pang(CNN={"strides": "1, 2, 2, 1", "kernel_sizes": "8, 4, 4, 3"},
                          POST_LANGEVIN={"iters": "60"}),
    "celeba-pang": _pang(CNN={"hidden_feature_dims": "256, 128, 64, 32", "strides": "1, 2, 2, 2, 2",
                              "kernel_sizes": "4, 4, 4, 4, 4", "paddings": "0, 1, 1, 1, 1"}),
}


def preset_dataset(preset: str) -> str:
    """The data a preset trains on: "fmnist-fft" -> "fmnist"."""
    return preset.split("-", 1)[0]
