"""Cross-checks between the keys of a configuration (run by ``Config.validate``), and the
latent size Q that the prior's and the generator's widths must agree on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kaem.config.schema import ConfigError
from kaem.config.values import format_value

if TYPE_CHECKING:  # for annotations only: loader imports this module
    from kaem.config.loader import Config


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
    """EbmModel.layer_widths = (Q, hidden..., 1): the deep prior (method §1.3), whose base
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
