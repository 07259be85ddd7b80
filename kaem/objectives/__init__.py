"""Training objectives: the maximum-likelihood loss of a minibatch, with its gradients
written by hand (method §4), and the one dispatcher that picks the config's.

=========  ================================================  ======================
mode       posterior samples behind the loss                 module
=========  ================================================  ======================
is         S prior draws shared by the batch, reweighted      ``importance.py``
ula        per-datum ULA chains                              ``langevin.py``
automala   per-datum autoMALA chains                         ``langevin.py``
thermo     power posteriors on a temperature ladder, TI      ``thermodynamic.py``
=========  ================================================  ======================

Every mode's loss has the shape L = −[E_post(log p̃(z) + log p(x|z)) − E_prior(log p̃(z))]
with the samples and weights held constant: each module has a ``*_loss_and_grad`` (an
ordinary differentiable function of the parameters) and a ``*_step`` (the sampler, then
the loss). The prior's part of every loss is the prior's own ``prior_loss``
(``kaem/priors``); ``resampling.py`` holds the importance weights and resamplers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaem.objectives.importance import is_loss_and_grad, is_step, posterior_draws
from kaem.objectives.langevin import langevin_loss_and_grad, langevin_step
from kaem.objectives.thermodynamic import thermo_loss_and_grad, thermo_step
from kaem.parallel.split import Split
from kaem.samplers import ti_weights

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM

MODES = ("is", "ula", "automala", "thermo")


def objective_mode(cfg: Any) -> str:
    """The training objective a config selects: "thermo" if num_temps > 1 (its inner
    sampler is autoMALA if use_autoMALA, else ULA), else "automala"/"ula" if
    use_langevin, else "is" (use_autoMALA alone does not leave IS, as in the reference)."""
    if cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"] > 1:
        return "thermo"
    pl = cfg["POST_LANGEVIN"]
    if pl["use_langevin"]:
        return "automala" if pl["use_autoMALA"] else "ula"
    return "is"


def training_step(model: KAEM, x: Any, rng: Any, iteration: int = 0, n_updates: int = 1,
                  state: dict | None = None, split: Split | None = None) -> tuple[Any, dict[str, Any]]:
    """The gradient evaluation of the objective the config selects (:func:`objective_mode`):
    :func:`is_step`, :func:`langevin_step` or :func:`thermo_step`. Fills
    ``model.gradients()``; returns the loss and the step's diagnostics. ``rng`` is the stream
    every rank shares; ``split`` says which part of the batch x is (default: all of it), and
    then the loss and gradients are that part's share."""
    mode = model.objective.mode
    if split is not None and split.temperatures and mode != "thermo":
        raise ValueError(f"--parallel temperatures splits the ladder of thermodynamic integration, "
                         f"but the objective is {mode}; use --parallel data")
    if mode == "is":
        return is_step(model, x, rng, split)
    if mode == "thermo":
        return thermo_step(model, x, rng, iteration, n_updates, state, split)
    return langevin_step(model, x, rng, state, split)


__all__ = ["MODES", "is_loss_and_grad", "is_step", "langevin_loss_and_grad", "langevin_step", "objective_mode",
           "posterior_draws", "thermo_loss_and_grad", "thermo_step", "ti_weights", "training_step"]
