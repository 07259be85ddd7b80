"""The settings of the training objectives, as typed values (built from a config by
``kaem/build.py``; the objectives never read a config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImportanceSettings:
    """Importance sampling (method §4.1): S prior samples shared by the batch, resampled
    (``resampler``) where a row's ESS < ``ess_threshold``·S; the prior term by contrastive
    divergence (S fresh draws) or by the exact quadrature log Z."""

    samples: int = 100
    contrastive: bool = True
    ess_threshold: float = 0.5
    resampler: str = "residual"


@dataclass(frozen=True)
class LangevinSettings:
    """Per-datum posterior chains (method §4.2–4.3): ``steps`` ULA steps of size
    ``step_size``, or autoMALA iterations from the leapfrog step ``step_size`` (the first
    ``n_unadjusted`` unadjusted, the adapted step clamped to ``step_bounds`` and moved by
    ``eta_changerate``); the prior term as in importance sampling."""

    steps: int = 25
    step_size: float = 0.01
    automala: bool = False
    n_unadjusted: int = 2
    step_bounds: tuple[float, float] = (1e-4, 10.0)
    eta_changerate: float = 2.0
    contrastive: bool = True


@dataclass(frozen=True)
class ThermoSettings:
    """Thermodynamic integration (method §4.4): ``num_temps`` rungs above t = 0 on the ladder
    t_k = (k/N_t)^p, p scheduled from ``p_start`` to ``p_end`` over training with
    ``num_cycles`` cycles; ``steps_per_temp`` sampler steps (``sampler``: ULA or autoMALA)
    with a replica exchange every ``exchange_every``; the TI ``rule``."""

    num_temps: int = 5
    p_start: float = 10.0
    p_end: float = 1.0
    num_cycles: int = 0
    steps_per_temp: int = 5
    exchange_every: int = 1
    rule: str = "left"
    sampler: LangevinSettings = LangevinSettings()


@dataclass(frozen=True)
class ObjectiveSettings:
    """The objective a run trains with (``mode``: is, ula, automala or thermo) and the
    settings of each."""

    mode: str = "is"
    importance: ImportanceSettings = ImportanceSettings()
    langevin: LangevinSettings = LangevinSettings()
    thermo: ThermoSettings = ThermoSettings()
