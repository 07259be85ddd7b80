"""Posterior samplers for KAEM (method §4.2–4.4), device-agnostic (numpy/cupy).

All samplers act on a population z of shape (N, *latent_shape) (chains on the leading
axis) targeting log p(z) + t·log p(x|z) with per-chain temperatures t (N,), and draw
randomness only from an explicit ``rng`` Generator.

* :func:`ula` — unadjusted Langevin.
* :func:`automala` — MALA with a reversibly chosen per-chain step size (autoMALA).
* :mod:`.thermo` — temperature ladder, p-schedule, replica exchange, TI estimate and the
  all-temperatures-at-once sampler :func:`thermo_sample`.
* :class:`LinearGaussianTarget` — a test target with exact posterior/evidence.
* :class:`PriorOnly` — a density alone as a target (no likelihood), e.g. prior sampling.
"""
from kaem.samplers.automala import AutoMALAInfo, adapt_step_size, automala
from kaem.samplers.gaussian import LinearGaussianTarget
from kaem.samplers.target import Evaluation, PriorOnly, Target, evaluate, tempered
from kaem.samplers.thermo import (
    p_schedule,
    replica_exchange,
    temperature_ladder,
    thermo_sample,
    ti_log_evidence,
    ti_weights,
)
from kaem.samplers.ula import ula

__all__ = [
    "AutoMALAInfo",
    "Evaluation",
    "LinearGaussianTarget",
    "PriorOnly",
    "Target",
    "adapt_step_size",
    "automala",
    "evaluate",
    "p_schedule",
    "replica_exchange",
    "temperature_ladder",
    "tempered",
    "thermo_sample",
    "ti_log_evidence",
    "ti_weights",
    "ula",
]
