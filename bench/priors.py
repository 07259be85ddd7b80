"""Benchmark of the latent priors (not a test): the mixture at the SVHN/CelebA prior config
(P = 40 components, Q = 81, FFT G = 50, 200 Gauss–Legendre nodes) next to the univariate
prior at the MNIST config (P = 20, Q = 41, RBF G = 20, 100 nodes).

For each: median wall time of 100 inverse-transform draws; of the prior's loss and gradient
on 100 posterior samples (contrastive divergence with 100 prior draws, and exact log Z);
and of one sampler evaluation of log p̃ and ∇_z on 250 chains (5 temperatures × batch 50,
the SVHN thermo population), with the z-independent work done once per sampler run
(``sampler_log_density``) and, for comparison, redone at every call
(``log_unnorm_and_grad``: the mixture's log Z). For the univariate prior also the parts of
one default IS iteration (``is_*``, see ``is_parts``), the loss fused and by the reference
path. Repetitions interleaved round-robin
(robust to background load). Prints one JSON object per line. Usage:
    python bench/priors.py [--device cpu|gpu|auto] [--dtype float32|float64] [--reps 20] [--only univariate]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from kaem.backend import get_backend  # noqa: E402
from kaem.nn.kan import KANSpec, fixed_parameters  # noqa: E402
from kaem.priors import MixturePrior, UnivariatePrior  # noqa: E402
from timing import backend_args, interleaved_medians  # noqa: E402  (bench/timing.py)


def build(be):
    mix = MixturePrior(be, 40, 81, KANSpec(basis="FFT", grid_size=50, grid_range=(-1.5, 1.5)), be.rng(0),
                       n_nodes=200, train_proportions=True)
    uni = UnivariatePrior(be, 20, 41, KANSpec(basis="RBF", grid_size=20), be.rng(0), n_nodes=100)
    return {"mixture SVHN (P=40, Q=81, FFT G=50, 200 nodes)": mix, "univariate MNIST (P=20, Q=41, RBF G=20)": uni}


def cases(be, prior):
    rng = be.rng(1)
    z_post, z_cd, chains = prior.sample(100, rng), prior.sample(100, rng), prior.sample(250, rng)
    w = be.xp.full(100, 0.01, dtype=be.dtype)
    density = prior.sampler_log_density()
    return {
        "sample_100": lambda: prior.sample(100, rng),
        "prior_loss_cd": lambda: prior.prior_loss(z_post, w, z_cd=z_cd),
        "prior_loss_exact": lambda: prior.prior_loss(z_post, w, exact_logZ=True),
        "sampler_eval_250": lambda: density(chains),
        "sampler_eval_250_uncached": lambda: prior.log_unnorm_and_grad(chains),
    }


def is_parts(be, prior):
    """The prior's work in one default IS iteration (S = 100, contrastive divergence): 200
    inverse-transform draws and the loss on 100 weighted posterior samples + 100 CD draws,
    inside one ``fixed_parameters`` scope as in ``is_step``; the loss also by the reference
    path (basis tensor, forward + backward) for comparison."""
    rng = be.rng(2)
    z = prior.sample(200, rng)
    w = be.xp.asarray(np.random.default_rng(0).dirichlet(np.ones(100)), dtype=be.dtype)
    reference = copy.copy(prior.layer.basis)
    reference.weighted_sums = lambda *a, **k: None  # no fused form: evaluate + backward

    def loss(basis):
        def run():
            prior.layer.basis, keep = basis, prior.layer.basis
            try:
                with fixed_parameters():
                    prior.prior_loss(z[:100], w, z_cd=z[100:])
            finally:
                prior.layer.basis = keep
        return run

    def iteration():
        with fixed_parameters():
            zz = prior.sample(200, rng)
            prior.prior_loss(zz[:100], w, z_cd=zz[100:])

    return {"is_prior_iteration": iteration, "is_sample_200": lambda: prior.sample(200, rng),
            "is_its_tables": prior.its_tables, "is_prior_loss_fused": loss(prior.layer.basis),
            "is_prior_loss_reference": loss(reference)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", choices=["mixture", "univariate"], help="time one of the two priors")
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    for name, prior in build(be).items():
        if args.only and not name.startswith(args.only):
            continue
        jobs = cases(be, prior)
        if isinstance(prior, UnivariatePrior):
            jobs.update(is_parts(be, prior))
        t = interleaved_medians(be, jobs, args.reps, warmup=2)
        print(json.dumps({"prior": name, "device": be.device, "dtype": args.dtype, "reps": args.reps,
                          **{f"{k}_ms": round(1e3 * v, 2) for k, v in t.items()}}))


if __name__ == "__main__":
    main()
