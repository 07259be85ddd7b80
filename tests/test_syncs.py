"""Device->host synchronisations per training iteration, counted on a simulated device
(tests/syncbackend.py): at most 4 in every mode.

One iteration is what ``Trainer.run`` does per minibatch (``Trainer._iterate``): gather the
batch, the mode's step function, the finiteness checks (two intended syncs: the loss and
gradients before the update, the parameters after it), the optimiser step. The
counter itself is checked first: each kind of conversion it must catch is caught.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from kaem.model import KAEM
from kaem.run.trainer import Trainer
from syncbackend import XP, counting, counting_backend

MAX_SYNCS_PER_ITERATION = 4

MODES = {
    "is-residual": [],
    "is-systematic": ["GeneratorModel.resampler=systematic"],
    "is-stratified-pair": ["GeneratorModel.resampler=stratified", "GeneratorModel.noise_sharing=pair"],
    "is-exact-logZ": ["TRAINING.contrastive_divergence_training=false"],
    "is-mlp-generator": ["MLP.use_mlp_lkhood=true"],
    "is-mixture-prior": ["MixtureModel.use_mixture_prior=true", "MixtureModel.train_proportions=true",
                         "EbmModel.layer_widths=3,4", "GeneratorModel.widths=4,5"],
    "is-learnable-pi0-trapezium": ["EbmModel.π_0=learnable_gaussian", "EbmModel.quadrature_method=trapezium"],
    "ula": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3"],
    "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true", "POST_LANGEVIN.iters=3"],
    "thermo-ula": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3"],
    "thermo-automala": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3",
                        "POST_LANGEVIN.use_autoMALA=true"],
    "thermo-ula-pair": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3",
                        "GeneratorModel.noise_sharing=pair"],
    "thermo-mlp-generator": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "MLP.use_mlp_lkhood=true"],
    "ula-mixture-prior": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3",
                          "MixtureModel.use_mixture_prior=true"],
    # the deep prior: its CD draws come from PRIOR_LANGEVIN.iters prior-ULA steps
    "is-deep-prior-kan": ["EbmModel.layer_widths=4,5,3,1", "PRIOR_LANGEVIN.iters=3"],
    "is-deep-prior-mlp": ["EbmModel.layer_widths=4,5,3,1", "EbmModel.deep_body=mlp", "PRIOR_LANGEVIN.iters=3"],
    "ula-deep-prior": ["EbmModel.layer_widths=4,5,3,1", "PRIOR_LANGEVIN.iters=3",
                       "POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3"],
    "thermo-automala-deep-prior": ["EbmModel.layer_widths=4,5,3,1", "PRIOR_LANGEVIN.iters=3",
                                   "THERMODYNAMIC_INTEGRATION.num_temps=3", "POST_LANGEVIN.use_autoMALA=true"],
}


def test_the_counter_catches_every_kind_of_conversion():
    be = counting_backend()
    a = be.asarray(np.arange(6.0).reshape(2, 3))
    s = a.sum()
    conversions = [lambda: float(s), lambda: int(s), lambda: bool(s > 0), lambda: s.item(),
                   lambda: a.tolist(), lambda: np.asarray(a), lambda: a.get(), lambda: a[a > 2],
                   lambda: XP.nonzero(a), lambda: np.nonzero(a), lambda: XP.bincount(a.ravel().astype(int)),
                   lambda: XP.unique(a), lambda: XP.where(a > 1), lambda: list(range(20))[s.astype(int)],
                   lambda: f"{s:.2f}", lambda: XP.allclose(a, a), lambda: int(be.rng(0).integers(0, 3))]
    for i, conv in enumerate(conversions):
        with counting() as c:
            try:
                conv()
            except TypeError:
                pass
        assert c.n >= 1, f"conversion {i} was not counted"
    with counting() as c:  # device-side work, fixed shapes: nothing counted
        b = XP.exp(a) @ a.T + 1.0
        b += XP.where(a > 1, a, 0.0).sum(axis=1)[:, None]
        k = be.rng(1).integers(0, 2)
        b = a[k] * XP.searchsorted(XP.arange(4.0), a.ravel()).reshape(2, 3)[0]
        b[0] = 3
        XP.sort(a, axis=1), a.T.copy(), len(a), a.shape
    assert c.n == 0, c.events


@pytest.mark.parametrize("name", sorted(MODES))
def test_at_most_four_syncs_per_iteration(name, tmp_path):
    be = counting_backend("float64")
    cfg = tiny_config(*MODES[name], "TRAINING.importance_sample_size=6", "TRAINING.batch_size=4")
    m = KAEM(cfg, (1, 2, 3), be, seed=0)
    x_train = np.random.default_rng(0).random((12, 1, 2, 3))
    tr = Trainer(m, be, x_train, x_train[:4], str(tmp_path), seed=0, log=lambda s: None)
    for it in range(3):
        with counting() as c:
            assert tr._iterate(10, 10)
        assert c.n <= MAX_SYNCS_PER_ITERATION, (name, it, c.events)
