"""The schema: every section and key of a run configuration, with its type, default and bounds.

``SCHEMA[section][key]`` is a :class:`Field`, built by one of the typed constructors
(``integer``, ``real``, ``flag``, ``choice``, ``int_list``, ``float_list``, ``float_pair``).
Sections and keys are the Julia reference's; keys keep their unicode names (``init_τ``).
The schema defaults are the bottom layer of every configuration (see ``kaem.config``).
Every config problem, in any layer, raises :class:`ConfigError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union


class ConfigError(ValueError):
    """A configuration problem: bad file, section, key, value or combination."""


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
# memory is checked separately (kaem/run/memory.py).
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
    "MixtureModel": {  # the mixture prior (method §1.2), the reference's section and keys
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
