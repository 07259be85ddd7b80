"""Run configuration: INI files with the Julia reference's sections and keys.

A configuration is built in layers (``load_config``):

1. the schema defaults below, plus the per-dataset overrides in ``DATASET_DEFAULTS``;
2. an INI file, of which only the keys present override;
3. command-line overrides of the form ``SECTION.key=value`` (``--set``);
4. cross-checks between keys (``Config.validate``).

Values are typed (int, float, bool, str choice, tuple of ints, pair of floats). Keys keep
their unicode names (``init_τ``, ``π_0``); ASCII aliases (``init_tau``, ``pi_0``) are
accepted wherever a key is read, and resolved to the unicode name. Every problem raises
:class:`ConfigError` with a message naming the bad thing and listing the valid options.

``config_to_ini`` writes the canonical text stored in checkpoints and ``config_from_ini``
reads it back exactly.
"""
from __future__ import annotations

import configparser
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union


class ConfigError(ValueError):
    """A configuration problem: bad file, section, key, value or combination."""


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------

ChoiceSource = Union[tuple, Callable[[], Iterable[str]]]


@dataclass(frozen=True)
class Field:
    """One key: its value kind, default and constraints.

    kind is one of "int", "float", "bool", "choice", "int_list", "float_pair", "float_list".
    ``ge``/``gt``/``le`` bound numbers (and each item of a list or pair); ``choices`` is a
    tuple or a function returning the valid names (looked up at validation time);
    ``min_len`` is the least number of entries of an int list (0: may be empty);
    ``length`` is the exact number of entries of a float list.
    """

    kind: str
    default: Any
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    choices: Optional[ChoiceSource] = None
    min_len: int = 1
    length: int = 0


def integer(default: int, ge: Optional[int] = None, le: Optional[int] = None) -> Field:
    """An int key."""
    return Field("int", default, ge=ge, le=le)


def real(default: float, ge: Optional[float] = None, gt: Optional[float] = None,
         le: Optional[float] = None) -> Field:
    """A finite float key."""
    return Field("float", float(default), ge=ge, gt=gt, le=le)


def flag(default: bool) -> Field:
    """A bool key (true/false/1/0/yes/no)."""
    return Field("bool", default)


def choice(default: str, choices: ChoiceSource) -> Field:
    """A string key restricted to a set of names."""
    return Field("choice", default, choices=choices)


def int_list(default: tuple, ge: Optional[int] = None, min_len: int = 1, le: Optional[int] = None) -> Field:
    """A comma-separated list of ints, stored as a tuple."""
    return Field("int_list", tuple(default), ge=ge, min_len=min_len, le=le)


def float_list(default: tuple, ge: Optional[float] = None, le: Optional[float] = None) -> Field:
    """Exactly len(default) comma-separated floats, in any order, stored as a tuple."""
    return Field("float_list", tuple(float(x) for x in default), ge=ge, le=le, length=len(default))


def float_pair(default: tuple, gt: Optional[float] = None) -> Field:
    """Two comma-separated floats ``lo, hi`` with lo < hi, stored as a tuple."""
    return Field("float_pair", (float(default[0]), float(default[1])), gt=gt)


ACTIVATIONS = ("silu", "gelu", "relu", "leakyrelu", "tanh", "sigmoid", "elu", "selu",
               "celu", "hardswish", "swish", "identity", "none")


def optimizer_names() -> list:
    """Valid ``OPTIMIZER.type`` names: the keys of ``kaem.optim.OPTIMIZERS``."""
    from kaem.optim import OPTIMIZERS
    return list(OPTIMIZERS)


def basis_names() -> list:
    """Valid ``spline_function`` names: the keys of ``kaem.nn.bases.BASES`` right now."""
    from kaem.nn.bases import BASES  # lazy: bases registered later become valid automatically
    return list(BASES)


def _kan_fields() -> dict:
    """Keys shared by the prior (EbmModel) and the generator (GeneratorModel)."""
    return {
        "spline_degree": integer(3, ge=1, le=MAX_DEGREE),
        "base_activation": choice("silu", ACTIVATIONS),
        "spline_function": choice("RBF", basis_names),
        "grid_size": integer(20, ge=2, le=MAX_GRID),
        "grid_update_ratio": real(0.05, ge=0, le=1),
        "grid_range": float_pair((-1.2, 1.2)),
        "ε_scale": real(0.1, ge=0),
        "μ_scale": real(1.0, ge=0),
        "σ_base": real(1.0, ge=0),
        "σ_spline": real(1.0, ge=0),
        "init_τ": real(1.0, gt=0),
        "τ_trainable": flag(True),
    }


# Plausible upper bounds (the reference's largest values are 100-1000 times smaller): they
# turn a typo such as 10^9 into a clear error before anything is allocated. What fits in
# memory is checked separately (kaem/memory.py).
MAX_WIDTH = 100_000  # a layer width, P or Q
MAX_GRID = 10_000  # grid_size
MAX_DEGREE = 10  # spline_degree
MAX_KERNEL = 1_000  # conv kernel sizes, strides, paddings
MAX_NODES = 100_000  # Gauss–Legendre nodes
MAX_SAMPLES = 1_000_000  # batch, importance and grid-updating sample counts
MAX_EVAL_SAMPLES = 100_000  # held-out S: cost ∝ S·N_test·D, 10^5 already takes many minutes
MAX_STEPS = 100_000  # Langevin steps and the like
MAX_TEMPS = 1_000  # temperatures, cycles
MAX_DATA = 100_000_000  # images
MAX_COUNT = 1_000_000_000  # epochs, frequencies

SCHEMA: dict = {
    "EbmModel": {  # the prior
        "layer_widths": int_list((20, 41), ge=1, min_len=2, le=MAX_WIDTH),  # (P, Q); more = deep prior
        **_kan_fields(),
        "π_0": choice("ebm", ("ebm", "uniform", "gaussian", "lognormal", "learnable_gaussian")),
        "GaussQuad_nodes": integer(100, ge=2, le=MAX_NODES),
        "quadrature_method": choice("gausslegendre", ("gausslegendre", "trapezium")),
        "shared_uniform": flag(True),
        "deep_body": choice("kan", ("kan", "mlp")),  # deep prior's network (> 2 layer_widths)
    },
    "MixtureModel": {  # the mixture prior (spec 1.2), the reference's section and keys
        "use_mixture_prior": flag(False),
        "train_proportions": flag(False),
        "λ_reg": real(0.0, ge=0),
        "use_attention_kernel": flag(False),
    },
    "GeneratorModel": {
        "widths": int_list((41, 82), ge=1, le=MAX_WIDTH),  # first = Q; the data dimension D is appended
        **_kan_fields(),
        "generator_variance": real(0.1, gt=0),
        "generator_noise": real(0.1, ge=0),
        "output_activation": choice("sigmoid", ("sigmoid", "tanh", "none")),
        "resampler": choice("residual", ("residual", "systematic", "stratified")),
        "noise_sharing": choice("sample", ("pair", "sample")),  # ξ per sample or per (datum, sample); README
    },
    "CNN": {  # the conv-transpose generator (kaem/generators/conv.py), the reference's keys
        "use_cnn_lkhood": flag(False),
        "hidden_feature_dims": int_list((128, 64, 32), ge=1, le=MAX_WIDTH),  # channels between Q and C
        "strides": int_list((1, 2, 2, 2), ge=1, le=MAX_KERNEL),  # one per layer: len(hidden_feature_dims) + 1
        "kernel_sizes": int_list((4, 4, 4, 4), ge=1, le=MAX_KERNEL),
        "paddings": int_list((0, 1, 1, 1), ge=0, le=MAX_KERNEL),
        "activation": choice("leakyrelu", ACTIVATIONS),
        "batchnorm": flag(False),
        "latent_concat": flag(False),
    },
    "MLP": {  # dense generator (kaem/generators/mlp.py); not a reference section
        "use_mlp_lkhood": flag(False),  # widths from GeneratorModel.widths, D appended
        "activation": choice("leakyrelu", ACTIVATIONS),
    },
    "GRID_UPDATING": {
        "update_prior_grid": flag(True),
        "update_llhood_grid": flag(True),
        "num_grid_updating_samples": integer(100, ge=1, le=MAX_SAMPLES),
        "grid_update_frequency": integer(100, ge=1, le=MAX_COUNT),
        "grid_update_decay": real(0.999, gt=0, le=1),
    },
    "PRIOR_LANGEVIN": {
        "step_size": real(0.16, gt=0),
        "iters": integer(60, ge=1, le=MAX_STEPS),
    },
    "POST_LANGEVIN": {
        "use_langevin": flag(False),
        "initial_step_size": real(0.01, gt=0),
        "step_size_bounds": float_pair((0.0001, 10.0), gt=0),
        "iters": integer(25, ge=1, le=MAX_STEPS),
        "N_unadjusted": integer(2, ge=0, le=MAX_STEPS),
        "autoMALA_η_changerate": real(2.0, gt=0),
        "use_autoMALA": flag(False),
    },
    "THERMODYNAMIC_INTEGRATION": {
        "num_temps": integer(1, ge=0, le=MAX_TEMPS),  # 0 or 1: no thermodynamic integration
        "p_start": real(10.0, gt=0),
        "p_end": real(1.0, gt=0),
        "num_cycles": integer(0, ge=0, le=MAX_TEMPS),
        "N_langevin_per_temp": integer(5, ge=1, le=MAX_STEPS),
        "replica_exchange_frequency": integer(1, ge=1, le=MAX_STEPS),
        "integration_rule": choice("left", ("left", "trapezoid", "right")),
    },
    "TRAINING": {
        "batch_size": integer(100, ge=1, le=MAX_SAMPLES),
        "importance_sample_size": integer(100, ge=1, le=MAX_SAMPLES),
        "N_train": integer(50000, ge=1, le=MAX_DATA),
        "N_test": integer(1000, ge=1, le=MAX_DATA),
        "N_epochs": integer(10, ge=1, le=MAX_COUNT),
        "contrastive_divergence_training": flag(True),
        "resampling_threshold_factor": real(0.5, ge=0, le=1),
        "eps": real(0.0001, gt=0),
        "update_grid": flag(True),
        "checkpoint_every": integer(1, ge=-1, le=MAX_COUNT),  # epochs; 0 or -1: only at the end
        "gen_every": integer(1, ge=0, le=MAX_COUNT),  # epochs between sample grids OUT/samples/epoch_NNN.png; 0 = none
        "eval_importance_samples": integer(1000, ge=1, le=MAX_EVAL_SAMPLES),
        "dtype": choice("float32", ("float32", "float64")),
    },
    "OPTIMIZER": {  # what each key means for each type: kaem/optim.py
        "type": choice("adam", optimizer_names),
        "learning_rate": real(0.001, gt=0),
        "betas": float_list((0.9, 0.999), ge=0, le=1),  # < 1: check_config
        "ε": real(1e-8, gt=0),
        "ρ": real(0.9, ge=0, le=1),  # < 1: check_config
        "decay": real(0.0, ge=0),  # adamw's weight decay λ
    },
    "LR_SCHEDULE": {  # learning rate × decay at each milestone epoch (none by default)
        "decay": real(1.0, gt=0, le=1),
        "milestone_epochs": int_list((), ge=1, min_len=0, le=MAX_COUNT),
    },
}

# Per-dataset overrides of the schema defaults, written exactly as in an INI file:
# {"dataset": {"SECTION": {"key": "value"}}}. A new dataset or variant is one entry.
# The reference's MNIST/FMNIST runs use RBF with G = 20 or FFT with G = 50 in both the prior
# and the generator (spec section 5). A preset named "<data>-<variant>" trains on <data>.
# FFT presets use 200 Gauss–Legendre nodes (the reference's FFT value for SVHN/CelebA): after
# one FMNIST epoch with 100 nodes log Z was already off by 1e-2 (2e-4 with 200).
_FFT = {"EbmModel": {"spline_function": "FFT", "grid_size": "50", "GaussQuad_nodes": "200"},
        "GeneratorModel": {"spline_function": "FFT", "grid_size": "50"}}
# The reference's natural-image runs (thezettascale's svhn/cifar/celeba_config.ini, spec §5):
# for each of Q = 81 latents a mixture of P = 40 components, FFT G = 50 on ±1.5 with a
# leakyrelu base and 200 nodes; a conv-transpose generator (the [CNN] defaults are the SVHN
# stack); σ = 0.3, σ_n = 0.01; ULA posterior, η = 0.005 (--mode thermo: 5 temperatures,
# p 1 -> 8, right-sum rule: it beat left and trapezoid on held-out log-likelihood on
# fmnist32, README); 20 000 images, 40 epochs of 100, Adam 2e-4.
def _images(cnn: dict, langevin_steps: str = "40") -> dict:
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
# thezettascale copies, spec 5): energy 100 -> 200 -> 200 -> 1 of KAN layers (FFT, G = 50,
# gelu, range ±1.5), conv-transpose generator, prior and posterior ULA, Adam 2e-4, batch
# 100, 20 000 images, 40 epochs. Deviations: π0 = N(0, I) (the reference's flat "ebm" base
# leaves the density improper and nothing to start prior Langevin from), and num_temps = 1
# (the files also set 5 temperatures, which here would select thermodynamic integration;
# the spec's PANG row is ULA).
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


# ASCII spellings of the Greek letters used in key names.
GREEK_TO_ASCII = {"ε": "eps", "μ": "mu", "σ": "sigma", "τ": "tau", "π": "pi",
                  "λ": "lambda", "η": "eta", "ρ": "rho"}

OVERRIDE_FORM = "SECTION.key=value (e.g. EbmModel.grid_size=30)"


def ascii_alias(key: str) -> str:
    """The key with its Greek letters spelled out (``init_τ`` -> ``init_tau``)."""
    for greek, latin in GREEK_TO_ASCII.items():
        key = key.replace(greek, latin)
    return key


# ---------------------------------------------------------------------------------------
# Reference keys of features not built here ("accepted but inert")
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inert:
    """A key of the reference's INI files that this package accepts without using it.

    ``inactive`` is the value that asks for nothing (``false`` for a switch, ``FP32`` for a
    precision); another value is a ConfigError naming ``feature``. ``inactive = None``
    accepts any value: the key has no effect here and ``feature`` says why. Inert values
    are checked, then dropped: they are not part of a Config, nor of a checkpoint's config.
    """

    feature: str
    inactive: Any = None


def _off(feature: str) -> Inert:
    """A switch of an unbuilt feature: only ``false`` is accepted."""
    return Inert(feature, False)


def _ignored(why: str) -> Inert:
    """A key with no effect here: any value is accepted."""
    return Inert(why)


def _all_ignored(why: str, *keys: str) -> dict:
    return {key: _ignored(why) for key in keys}


_FP32 = Inert("mixed precision (the float type is TRAINING.dtype)", "FP32")

# Every key of the reference's files (tests/fixtures/reference-configs/) that SCHEMA lacks.
# A SCHEMA key always wins over an entry here: when a feature is built, its keys move to
# SCHEMA and leave this table (tests/test_reference_configs.py checks there is no overlap).
INERT_KEYS: dict = {
    "EbmModel": {"layernorm": _off("layer normalisation in the KAN layers")},
    "GeneratorModel": {"layernorm": _off("layer normalisation in the KAN layers"),
                       "perceptual_scale": _ignored("the perceptual loss is off")},
    "TRAINING": {"use_perceptual_loss": _off("the perceptual loss"),
                 "num_generated_samples": _ignored("samples are drawn by `cli.py sample --n`"),
                 "batch_size_for_gen": _ignored("`cli.py sample` batches by itself"),
                 "use_gpu": _ignored("the device is chosen by --device"),
                 "dataset": _ignored("the dataset is chosen by --dataset or --preset"),
                 "verbose": _ignored("progress is always printed")},
    "OPTIMIZER": {"l-bfgs_memory": _ignored("L-BFGS is not an OPTIMIZER.type here")},
    "LINE_SEARCH": _all_ignored("line search is for L-BFGS, not an OPTIMIZER.type here",
                                "type", "c_1", "c_2", "rho"),
    "MIXED_PRECISION": {"full_precision": _FP32, "reduced_precision": _FP32,
                        "loss_scaling": _ignored("FP32 needs no loss scaling")},
    "PCA": {"use_pca": _off("PCA of the data"), "pca_components": _ignored("PCA is off")},
    "SYMBOLIC_REG": {"regularize_prior": _off("symbolic regularisation of the KAN functions"),
                     "regularize_gen": _off("symbolic regularisation of the KAN functions"),
                     **_all_ignored("symbolic regularisation is off", "nonlin_threshold", "reg_factor",
                                    "λ_total", "λ_l1", "λ_entropy", "λ_coef", "λ_coefdiff")},
    "SEQ": _all_ignored("text (sequence) data are not built; image data ignore [SEQ]",
                        "sequence_length", "vocab_size", "activation", "d_model"),
    "TUNING": _all_ignored("hyperparameter tuning is not built", "sampler", "num_trials"),
}


def inert_entry(section: str, key: str) -> Optional[tuple]:
    """(canonical key, Inert) if ``section.key`` (ASCII aliases allowed) is an inert
    reference key, None otherwise, and always None for a SCHEMA key."""
    if section in SCHEMA and any(key in (k, ascii_alias(k)) for k in SCHEMA[section]):
        return None
    for name, spec in INERT_KEYS.get(section, {}).items():
        if key in (name, ascii_alias(name)):
            return name, spec
    return None


def check_inert(section: str, key: str, spec: Inert, raw: str) -> None:
    """Accept an inert key's value if it asks for nothing; else a ConfigError naming the
    feature and the value to use."""
    if spec.inactive is None:
        return
    text = raw.strip()
    if isinstance(spec.inactive, bool):
        try:
            active = _parse_bool(text) != spec.inactive
        except ValueError:
            raise ConfigError(f"bad value {text!r} for {section}.{key}: expected "
                              f"{expected_text(flag(False))}") from None
    else:
        active = text.lower() != spec.inactive.lower()
    if active:
        raise ConfigError(f"{section}.{key} = {text} asks for {spec.feature}, which this package "
                          f"does not build; use {format_value(spec.inactive)} (or leave the key out)")


# ---------------------------------------------------------------------------------------
# Name resolution
# ---------------------------------------------------------------------------------------

def _suggestion(name: str, valid: Sequence[str]) -> str:
    """' (did you mean X?)' for a case-insensitive or close match, else ''."""
    same_case = [v for v in valid if v.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_section(section: str) -> str:
    """Check a section name (case-sensitive) and return it."""
    if section in SCHEMA:
        return section
    valid = list(SCHEMA) + [s for s in INERT_KEYS if s not in SCHEMA]
    raise ConfigError(f"unknown section {section!r}{_suggestion(section, valid)}; "
                      f"valid sections: {', '.join(valid)}")


def resolve_key(section: str, key: str) -> str:
    """Return the canonical (unicode) name of ``key`` in ``section``; accepts ASCII aliases."""
    fields = {} if section in INERT_KEYS and section not in SCHEMA else SCHEMA[resolve_section(section)]
    if key in fields:
        return key
    for canonical in fields:
        if ascii_alias(canonical) == key:
            return canonical
    valid = list(fields) + list(INERT_KEYS.get(section, {}))
    raise ConfigError(f"unknown key {key!r} in section [{section}]"
                      f"{_suggestion(key, valid + [ascii_alias(k) for k in valid])}; "
                      f"valid keys: {', '.join(valid)} "
                      f"(Greek letters may be written as {_alias_help()})")


def _alias_help() -> str:
    return ", ".join(f"{g}={a}" for g, a in GREEK_TO_ASCII.items())


# ---------------------------------------------------------------------------------------
# Parsing and formatting of values
# ---------------------------------------------------------------------------------------

def _bounds_text(field: Field) -> str:
    """Human description of numeric bounds, e.g. ' >= 0 and <= 1'."""
    def num(x: float) -> str:  # integers in full: "<= 1000000", not "<= 1e+06"
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = []
    if field.gt is not None:
        parts.append(f"> {num(field.gt)}")
    if field.ge is not None:
        parts.append(f">= {num(field.ge)}")
    if field.le is not None:
        parts.append(f"<= {num(field.le)}")
    return (" " + " and ".join(parts)) if parts else ""


def _in_bounds(x: float, field: Field) -> bool:
    if field.gt is not None and not x > field.gt:
        return False
    if field.ge is not None and not x >= field.ge:
        return False
    if field.le is not None and not x <= field.le:
        return False
    return True


def expected_text(field: Field) -> str:
    """What a valid value of ``field`` looks like, for error messages."""
    bounds = _bounds_text(field)
    if field.kind == "int":
        return f"an integer{bounds}"
    if field.kind == "float":
        return f"a finite float{bounds}"
    if field.kind == "bool":
        return "a bool (true/false/1/0/yes/no)"
    if field.kind == "choice":
        return f"one of: {', '.join(choices_of(field))}"
    if field.kind == "int_list":
        size = f"at least {field.min_len} integer(s)" if field.min_len else "integers (or nothing)"
        return f"a comma-separated list of {size}" + (f", each{bounds}" if bounds else "")
    if field.kind == "float_list":
        return (f"{field.length} comma-separated finite floats"
                + (f", each{bounds}" if bounds else ""))
    if field.kind == "float_pair":
        return ("two comma-separated floats 'lo, hi' with lo < hi"
                + (f", each{bounds}" if bounds else ""))
    raise AssertionError(f"unknown field kind {field.kind!r}")


def choices_of(field: Field) -> list:
    """The valid names of a choice field (calling the lookup function if it is one)."""
    source = field.choices
    return list(source() if callable(source) else source)


def _parse_int(raw: str) -> int:
    return int(raw.strip())  # ValueError on anything but an integer literal


def _parse_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _parse_bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("not a bool")


def _split_items(raw: str) -> list:
    items = [item.strip() for item in raw.split(",")]
    if any(item == "" for item in items):
        raise ValueError("empty item")
    return items


def parse_value(field: Field, raw: str) -> Any:
    """Parse and check one raw string; raises ValueError with no message on failure."""
    if field.kind == "int":
        value = _parse_int(raw)
        numbers = [value]
    elif field.kind == "float":
        value = _parse_float(raw)
        numbers = [value]
    elif field.kind == "bool":
        return _parse_bool(raw)
    elif field.kind == "choice":
        return _parse_choice(field, raw)
    elif field.kind == "int_list":
        value = tuple(_parse_int(item) for item in _split_items(raw)) if raw.strip() or field.min_len else ()
        if len(value) < field.min_len:
            raise ValueError("too short")
        numbers = list(value)
    elif field.kind == "float_list":
        value = tuple(_parse_float(item) for item in _split_items(raw))
        if len(value) != field.length:
            raise ValueError("wrong length")
        numbers = list(value)
    elif field.kind == "float_pair":
        value = tuple(_parse_float(item) for item in _split_items(raw))
        if len(value) != 2 or not value[0] < value[1]:
            raise ValueError("not an ordered pair")
        numbers = list(value)
    else:
        raise AssertionError(f"unknown field kind {field.kind!r}")
    if not all(_in_bounds(x, field) for x in numbers):
        raise ValueError("out of range")
    return value


def _parse_choice(field: Field, raw: str) -> str:
    """Exact match, else a unique case-insensitive match (returned in canonical case)."""
    text = raw.strip()
    valid = choices_of(field)
    if text in valid:
        return text
    folded = [v for v in valid if v.lower() == text.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError("not a choice")


def format_value(value: Any) -> str:
    """Canonical INI text of a typed value (floats use repr, so they round-trip exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return ", ".join(format_value(item) for item in value)
    return str(value)


# ---------------------------------------------------------------------------------------
# The Config object
# ---------------------------------------------------------------------------------------

class Config:
    """Typed configuration values, nested by section: ``cfg["EbmModel"]["grid_size"]``."""

    def __init__(self, sections: dict) -> None:
        self.sections: dict = sections

    def __getitem__(self, section: str) -> dict:
        return self.sections[resolve_section(section)]

    def __iter__(self) -> Iterator[str]:
        """The section names, so that ``for s in cfg: cfg[s]`` works (without it Python would
        iterate by calling ``cfg[0]``, ``cfg[1]``, ...)."""
        return iter(self.sections)

    def get(self, section: str, key: str) -> Any:
        """One value; ``key`` may be an ASCII alias."""
        return self.sections[resolve_section(section)][resolve_key(section, key)]

    def set(self, section: str, key: str, raw: str) -> None:
        """Parse and check one raw string value and store it (cross-checks not run). An
        inert reference key (INERT_KEYS) is checked and not stored."""
        inert = inert_entry(section, key)
        if inert is not None:
            check_inert(section, *inert, raw)
            return
        section = resolve_section(section)
        key = resolve_key(section, key)
        field = SCHEMA[section][key]
        try:
            value = parse_value(field, raw)
        except ValueError:
            raise ConfigError(f"bad value {raw.strip()!r} for {section}.{key}: "
                              f"expected {expected_text(field)}") from None
        self.sections[section][key] = value

    def copy(self) -> "Config":
        """An independent copy (values themselves are immutable)."""
        return Config({name: dict(values) for name, values in self.sections.items()})

    def validate(self) -> "Config":
        """Run the cross-checks between keys; returns self."""
        check_config(self)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.sections == other.sections

    def __repr__(self) -> str:
        return f"Config({self.sections!r})"


def latent_size(cfg: Config) -> int:
    """Q, the generator's input size: EbmModel.layer_widths = (P, Q) for the univariate and
    mixture priors, (Q, hidden..., 1) for the deep prior (more than two entries)."""
    widths = cfg["EbmModel"]["layer_widths"]
    return widths[0] if len(widths) > 2 else widths[-1]


def check_config(cfg: Config) -> None:
    """Cross-checks and features that are configurable but not built yet."""
    gen_widths = cfg["GeneratorModel"]["widths"]
    deep = len(cfg["EbmModel"]["layer_widths"]) > 2
    if deep:
        _check_deep_prior(cfg)
    Q, where = latent_size(cfg), "starts" if deep else "ends"
    if gen_widths[0] != Q:
        raise ConfigError(f"GeneratorModel.widths starts with {gen_widths[0]} but "
                          f"EbmModel.layer_widths {where} with Q = {Q}; "
                          "the first generator width must equal the latent size Q")
    check_generator_choice(cfg)
    mix = cfg["MixtureModel"]
    if mix["use_attention_kernel"]:
        raise ConfigError("MixtureModel.use_attention_kernel = true: the attention kernel "
                          "(z-dependent proportions) is not built; use false")
    if mix["λ_reg"] != 0:
        raise ConfigError(f"MixtureModel.λ_reg = {mix['λ_reg']!r}: not built (the reference's "
                          "penalty λ·Σ|α| is constant for softmax proportions, each row of α "
                          "sums to 1, so it changes no gradient); use 0")
    _check_optimizer(cfg)


def _check_optimizer(cfg: Config) -> None:
    """[OPTIMIZER] and [LR_SCHEDULE]: rates that keep the moments bounded, weight decay only
    where it is used, milestones in order."""
    opt = cfg["OPTIMIZER"]
    for key, values in (("betas", opt["betas"]), ("ρ", (opt["ρ"],))):
        if not all(v < 1 for v in values):
            raise ConfigError(f"OPTIMIZER.{key} = {format_value(opt[key])}: must be < 1 "
                              "(an exponential average needs a factor in [0, 1))")
    if opt["decay"] != 0 and opt["type"] != "adamw":
        raise ConfigError(f"OPTIMIZER.decay = {opt['decay']!r} is weight decay, which only "
                          f"type = adamw uses (type is {opt['type']}); use 0 or type = adamw")
    milestones = cfg["LR_SCHEDULE"]["milestone_epochs"]
    if any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(f"LR_SCHEDULE.milestone_epochs = {format_value(milestones)}: must be "
                          "strictly increasing epochs")


def check_generator_choice(cfg: Config) -> None:
    """One generator at most besides the KAN default, and a [CNN] stack whose lists agree
    (one stride, kernel size and padding per layer: len(hidden_feature_dims) + 1)."""
    cnn = cfg["CNN"]
    if cnn["use_cnn_lkhood"] and cfg["MLP"]["use_mlp_lkhood"]:
        raise ConfigError("CNN.use_cnn_lkhood and MLP.use_mlp_lkhood are both true; "
                          "choose one generator (both false: the KAN generator)")
    if not cnn["use_cnn_lkhood"]:
        return
    n_layers = len(cnn["hidden_feature_dims"]) + 1
    for key in ("strides", "kernel_sizes", "paddings"):
        if len(cnn[key]) != n_layers:
            raise ConfigError(f"CNN.{key} = {format_value(cnn[key])} has {len(cnn[key])} entries; the "
                              f"conv-transpose stack has {n_layers} layers (len(hidden_feature_dims) + 1), "
                              f"so it needs {n_layers}")


def _check_deep_prior(cfg: Config) -> None:
    """EbmModel.layer_widths = (Q, hidden..., 1): the deep prior (spec 1.3), whose base
    density is N(0, I) and whose normaliser is intractable (so no exact-log Z training)."""
    e = cfg["EbmModel"]
    widths = format_value(e["layer_widths"])
    if e["layer_widths"][-1] != 1:
        raise ConfigError(f"EbmModel.layer_widths = {widths}: more than 2 entries is the deep prior "
                          "(Q, hidden..., 1), whose last width (the energy) must be 1, e.g. 100, 200, 200, 1")
    if cfg["MixtureModel"]["use_mixture_prior"]:
        raise ConfigError(f"MixtureModel.use_mixture_prior = true and EbmModel.layer_widths = {widths} "
                          "(the deep prior): choose one prior (2 layer_widths for the mixture, or "
                          "use_mixture_prior = false)")
    if e["π_0"] != "gaussian":
        raise ConfigError(f"EbmModel.π_0 = {e['π_0']}: the deep prior (layer_widths = {widths}) tilts a "
                          "standard normal base density; use EbmModel.π_0 = gaussian")
    if not cfg["TRAINING"]["contrastive_divergence_training"]:
        raise ConfigError("TRAINING.contrastive_divergence_training = false needs an exact log Z, which the "
                          f"deep prior (EbmModel.layer_widths = {widths}) does not have; use true "
                          "(its negative samples come from prior Langevin, PRIOR_LANGEVIN)")


# ---------------------------------------------------------------------------------------
# Building configurations
# ---------------------------------------------------------------------------------------

def _schema_defaults() -> Config:
    return Config({section: {key: field.default for key, field in fields.items()}
                   for section, fields in SCHEMA.items()})


def _apply_entries(cfg: Config, entries: dict, where: str) -> None:
    """Set {section: {key: raw}} on cfg; errors are prefixed with ``where``."""
    seen: dict = {}
    for section, values in entries.items():
        for key, raw in values.items():
            try:
                inert = inert_entry(section, key)
                canonical = inert[0] if inert else resolve_key(section, key)
                if (section, canonical) in seen:
                    raise ConfigError(f"{section}.{canonical} is given twice (as "
                                      f"{seen[section, canonical]!r} and {key!r})")
                seen[section, canonical] = key
                cfg.set(section, canonical, raw)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None


def default_config(dataset: str) -> Config:
    """Schema defaults with the overrides of ``dataset`` (a key of DATASET_DEFAULTS)."""
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError(f"unknown dataset {dataset!r}; valid datasets: "
                          f"{', '.join(DATASET_DEFAULTS)}")
    cfg = _schema_defaults()
    _apply_entries(cfg, DATASET_DEFAULTS[dataset], f"defaults of dataset {dataset!r}")
    return cfg


def _new_parser() -> configparser.ConfigParser:
    # No DEFAULT section (a [DEFAULT] in a file is then just an unknown section) and no
    # '%' interpolation; keys keep case and unicode.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00",
                                       inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment]
    return parser


def _read_ini(text: str, where: str) -> dict:
    """INI text -> {section: {key: raw}}; syntax errors name ``where``."""
    parser = _new_parser()
    try:
        parser.read_string(text, source=where)
    except configparser.Error as err:
        raise ConfigError(f"{where}: cannot parse INI: {err}") from None
    return {section: dict(parser[section]) for section in parser.sections()}


def parse_override(text: str) -> tuple:
    """'SECTION.key=value' -> (section, key, value)."""
    target, eq, value = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not eq or not dot or not section or not key.strip():
        raise ConfigError(f"malformed override {text!r}: expected the form {OVERRIDE_FORM}")
    return section.strip(), key.strip(), value


def load_config(dataset: str, path: Optional[str] = None,
                overrides: Sequence[str] = ()) -> Config:
    """Defaults for ``dataset``, then the INI file at ``path`` (only keys present
    override), then each override ``SECTION.key=value``; then the cross-checks."""
    cfg = default_config(dataset)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else str(err)
            raise ConfigError(f"cannot read config file {path!r}: {reason}") from None
        _apply_entries(cfg, _read_ini(text, path), f"config file {path!r}")
    for text in overrides:
        section, key, value = parse_override(text)
        try:
            cfg.set(section, key, value)
        except ConfigError as err:
            raise ConfigError(f"override {text!r}: {err}") from None
    return cfg.validate()


def config_to_ini(cfg: Config) -> str:
    """Canonical INI text: every section and key in schema order, one ``key = value``."""
    blocks = []
    for section, fields in SCHEMA.items():
        lines = [f"[{section}]"]
        lines += [f"{key} = {format_value(cfg[section][key])}" for key in fields]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# Keys added after checkpoints were first written: a stored config without one takes the
# value that does what the code did before the key existed: None means the schema default
# (gen_every only adds sample grids; the mixture prior and the CNN and MLP generators are off
# unless switched on; the optimiser keys default to the Adam that was the only one, no
# schedule); a string pins the old behaviour even if the default changes.
LATER_KEYS = ({("TRAINING", "gen_every"): None,
               ("MixtureModel", "use_mixture_prior"): None, ("MixtureModel", "train_proportions"): None,
               ("MixtureModel", "λ_reg"): None, ("MixtureModel", "use_attention_kernel"): None,
               ("GeneratorModel", "noise_sharing"): "pair",  # ξ per (datum, sample) before the key
               ("EbmModel", "deep_body"): None}  # only read by the deep prior, which came later
              | {("OPTIMIZER", k): None for k in ("betas", "ε", "ρ", "decay")}
              | {(s, k): None for s in ("CNN", "MLP", "LR_SCHEDULE") for k in SCHEMA[s]})
# Keys removed since, with the one value a stored config can hold: dropped on reading.
RETIRED_KEYS = {("EbmModel", "mixture_model"): "false"}  # a placeholder that refused true


def config_from_ini(text: str) -> Config:
    """Read ``config_to_ini`` text back. Every key must be present (no defaults are
    filled in, so a stored config means exactly what it says), except the LATER_KEYS;
    RETIRED_KEYS are dropped."""
    entries = _read_ini(text, "stored config")
    for (section, key), value in RETIRED_KEYS.items():
        if entries.get(section, {}).get(key, "").strip() == value:
            del entries[section][key]
    for (section, key), value in LATER_KEYS.items():
        if value is not None and key not in {resolve_key(section, k) for k in entries.get(section, {})}:
            entries.setdefault(section, {})[key] = value
    cfg = _schema_defaults()
    _apply_entries(cfg, entries, "stored config")
    missing = [f"{section}.{key}" for section, fields in SCHEMA.items() for key in fields
               if key not in {resolve_key(section, k) for k in entries.get(section, {})}
               and (section, key) not in LATER_KEYS]
    if missing:
        raise ConfigError(f"stored config is missing keys: {', '.join(missing)}")
    return cfg.validate()


def config_diff(stored: Config, asked: Config) -> list:
    """'SECTION.key: A stored, B asked' for every key whose value differs."""
    return [f"{section}.{key}: {format_value(stored[section][key])} stored, {format_value(asked[section][key])} asked"
            for section, fields in SCHEMA.items() for key in fields
            if stored[section][key] != asked[section][key]]
