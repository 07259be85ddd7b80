"""Everything a configuration builds, in one place.

The components of a KAEM take typed arguments (widths, a ``KANSpec``, a π0 name, node
counts, settings dataclasses) and never read a config; this module reads the config's
sections and keys and builds them:

    kan_spec(section)                      the KAN hyper-parameters of EbmModel or GeneratorModel
    prior_kind / build_prior               univariate, mixture or deep prior (kaem/priors)
    generator_kind / build_generator       KAN, conv-transpose or MLP generator (kaem/generators)
    build_likelihood                       the Gaussian observation model (kaem/likelihood)
    objective_settings                     the objective's settings (kaem/objectives)
    grid_ratios                            the grid updates' blend of uniform and adaptive grids
    make_optimizer / step_schedule         the optimiser and its learning-rate schedule (kaem/optim.py)
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from kaem.backend import Backend
from kaem.config import ConfigError, format_value
from kaem.generators import GENERATORS
from kaem.generators.conv import spatial_sizes
from kaem.likelihood.gaussian import GaussianLikelihood
from kaem.nn.kan import KANSpec
from kaem.objectives import objective_mode
from kaem.objectives.settings import ImportanceSettings, LangevinSettings, ObjectiveSettings, ThermoSettings
from kaem.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSProp, StepSchedule
from kaem.priors import PRIORS

def kan_spec(s: dict) -> KANSpec:
    """The KAN hyper-parameters of a config section (EbmModel or GeneratorModel)."""
    return KANSpec(basis=s["spline_function"], grid_size=s["grid_size"], degree=s["spline_degree"],
                   activation=s["base_activation"], grid_range=tuple(s["grid_range"]),
                   eps_scale=s["ε_scale"], mu_scale=s["μ_scale"], sigma_base=s["σ_base"],
                   sigma_spline=s["σ_spline"], init_tau=s["init_τ"], tau_trainable=s["τ_trainable"])


# ---- the prior ----------------------------------------------------------------------------
def prior_kind(cfg: Any) -> str:
    """The prior a config selects: more than two EbmModel.layer_widths -> "deep",
    MixtureModel.use_mixture_prior -> "mixture", else "univariate"."""
    if len(cfg["EbmModel"]["layer_widths"]) > 2:
        return "deep"
    return "mixture" if cfg["MixtureModel"]["use_mixture_prior"] else "univariate"


def build_prior(cfg: Any, be: Backend, rng: Any) -> Any:
    """The prior the config selects, parameters drawn from ``rng``. EbmModel.layer_widths is
    (P, Q) for the univariate and mixture priors, (Q, hidden..., 1) for the deep prior."""
    kind, e = prior_kind(cfg), cfg["EbmModel"]
    spec = kan_spec(e)
    if kind == "deep":
        pl = cfg["PRIOR_LANGEVIN"]
        return PRIORS[kind](be, e["layer_widths"], e["deep_body"], spec, rng, step_size=pl["step_size"],
                            n_steps=pl["iters"])
    P, Q = (int(w) for w in e["layer_widths"])
    common = dict(pi0=e["π_0"], n_nodes=e["GaussQuad_nodes"], eps=cfg["TRAINING"]["eps"],
                  quadrature=e["quadrature_method"])
    if kind == "mixture":
        return PRIORS[kind](be, P, Q, spec, rng, train_proportions=cfg["MixtureModel"]["train_proportions"], **common)
    return PRIORS[kind](be, P, Q, spec, rng, shared_uniform=e["shared_uniform"], **common)


# ---- the generator and the likelihood ------------------------------------------------------
def generator_kind(cfg: Any) -> str:
    """The generator a config selects: "cnn" with CNN.use_cnn_lkhood, "mlp" with
    MLP.use_mlp_lkhood (the config rejects both), else "kan"."""
    if cfg["CNN"]["use_cnn_lkhood"]:
        return "cnn"
    if cfg["MLP"]["use_mlp_lkhood"]:
        return "mlp"
    return "kan"


def _conv_channels(cfg: Any, in_dim: int, data_shape: Sequence[int]) -> list[int]:
    """Channels Q -> CNN.hidden_feature_dims -> C; the stack must grow the 1×1 latent to the
    data's H×W (a ConfigError with the sizes layer by layer otherwise)."""
    c = cfg["CNN"]
    if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
        raise ConfigError(f"CNN.use_cnn_lkhood = true needs square (C, H, W) images; the data are "
                          f"{'×'.join(map(str, data_shape))}")
    sizes = spatial_sizes(c["kernel_sizes"], c["strides"], c["paddings"])
    if sizes[-1] != data_shape[1] or min(sizes) < 1:
        raise ConfigError(
            f"[CNN] kernel_sizes = {format_value(c['kernel_sizes'])}, strides = {format_value(c['strides'])}, "
            f"paddings = {format_value(c['paddings'])} grow the 1×1 latent through sizes "
            f"{' -> '.join(map(str, sizes))} (each layer: (size − 1)·stride − 2·padding + kernel), but the "
            f"data are {data_shape[1]}×{data_shape[2]}; change those lists so the last size is {data_shape[1]}")
    return [in_dim, *c["hidden_feature_dims"], data_shape[0]]


def build_generator(cfg: Any, be: Backend, rng: Any, in_dim: int, data_shape: Sequence[int]) -> Any:
    """The generator the config selects, from h (N, Q = ``in_dim``) to g (N, D), D = C·H·W:
    KAN or MLP widths GeneratorModel.widths with D appended; conv-transpose channels from
    [CNN]."""
    kind, g = generator_kind(cfg), cfg["GeneratorModel"]
    D = math.prod(int(d) for d in data_shape)
    if kind == "kan":
        return GENERATORS[kind](be, list(g["widths"]) + [D], kan_spec(g), rng)
    if kind == "mlp":
        return GENERATORS[kind](be, list(g["widths"]) + [D], rng, cfg["MLP"]["activation"])
    c = cfg["CNN"]
    return GENERATORS[kind](be, _conv_channels(cfg, in_dim, data_shape), c["kernel_sizes"], c["strides"],
                            c["paddings"], rng, activation=c["activation"], batchnorm=c["batchnorm"],
                            latent_concat=c["latent_concat"])


def build_likelihood(cfg: Any) -> GaussianLikelihood:
    """log p(x|z) with GeneratorModel's σ, σ_n, output activation and noise sharing."""
    g = cfg["GeneratorModel"]
    return GaussianLikelihood(g["generator_variance"], g["generator_noise"], g["output_activation"], g["noise_sharing"])


def grid_ratios(cfg: Any) -> tuple[float, float]:
    """grid_update_ratio of the prior (EbmModel) and of the generator (GeneratorModel)."""
    return float(cfg["EbmModel"]["grid_update_ratio"]), float(cfg["GeneratorModel"]["grid_update_ratio"])


# ---- the objective ----------------------------------------------------------------------
def objective_settings(cfg: Any) -> ObjectiveSettings:
    """The selected objective and the settings of each (TRAINING, POST_LANGEVIN,
    THERMODYNAMIC_INTEGRATION, GeneratorModel.resampler)."""
    t, pl, ti = cfg["TRAINING"], cfg["POST_LANGEVIN"], cfg["THERMODYNAMIC_INTEGRATION"]
    cd = bool(t["contrastive_divergence_training"])
    langevin = LangevinSettings(steps=pl["iters"], step_size=pl["initial_step_size"], automala=pl["use_autoMALA"],
                                n_unadjusted=pl["N_unadjusted"], step_bounds=tuple(pl["step_size_bounds"]),
                                eta_changerate=pl["autoMALA_η_changerate"], contrastive=cd)
    return ObjectiveSettings(
        mode=objective_mode(cfg),
        importance=ImportanceSettings(samples=t["importance_sample_size"], contrastive=cd,
                                      ess_threshold=t["resampling_threshold_factor"],
                                      resampler=cfg["GeneratorModel"]["resampler"]),
        langevin=langevin,
        thermo=ThermoSettings(num_temps=ti["num_temps"], p_start=ti["p_start"], p_end=ti["p_end"],
                              num_cycles=ti["num_cycles"], steps_per_temp=ti["N_langevin_per_temp"],
                              exchange_every=ti["replica_exchange_frequency"], rule=ti["integration_rule"],
                              sampler=langevin))


# ---- the optimiser ----------------------------------------------------------------------
def make_optimizer(params: dict[str, Any], section: dict[str, Any]) -> Optimizer:
    """The optimiser an [OPTIMIZER] config section (``cfg["OPTIMIZER"]``) describes, over
    ``params``; each type receives only the keys it uses (table in kaem/optim.py)."""
    kind, lr = section["type"], section["learning_rate"]
    beta1, beta2 = section["betas"]
    if kind == "sgd":
        return SGD(params, lr)
    if kind in ("momentum", "nesterov"):
        return OPTIMIZERS[kind](params, lr, rho=section["ρ"])  # type: ignore[call-arg]
    if kind == "rmsprop":
        return RMSProp(params, lr, rho=section["ρ"], eps=section["ε"])
    if kind == "adamw":
        return AdamW(params, lr, beta1, beta2, eps=section["ε"], weight_decay=section["decay"])
    if kind == "adam":
        return Adam(params, lr, beta1, beta2, eps=section["ε"])
    raise ValueError(f"unknown OPTIMIZER.type {kind!r}; valid: {', '.join(OPTIMIZERS)}")


def step_schedule(cfg: Any) -> StepSchedule:
    """The learning rate per epoch from OPTIMIZER.learning_rate and [LR_SCHEDULE]."""
    sched = cfg["LR_SCHEDULE"]
    return StepSchedule(cfg["OPTIMIZER"]["learning_rate"], sched["decay"], sched["milestone_epochs"])
