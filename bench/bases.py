"""Benchmark of the basis families in a generator KAN layer (not a test).

For each basis: median wall time of one forward + backward (with dx) of a layer
82 → 784 at batch N = 100 (the MNIST generator's last layer), G = 20 (G = 50 for FFT, as
in the paper's FFT runs), float32 by default, and its parameter count. Then the ratios
FFT/RBF and FFT/RBF at equal parameter count (RBF with G chosen so that nb = 2(G_FFT+1)),
and FFT's default direct cos/sin against the angle-addition recurrence (``use_recurrence``).
Last, per basis, the prior's inverse-transform time for 100 draws at the MNIST config
(P=20, Q=41, 100 Gauss–Legendre nodes).
Target of the issue: FFT ≤ 3× RBF at equal parameter count.

Repetitions are interleaved round-robin across the layers (robust to background load on
shared cores). Prints one JSON object per line. Usage:
    python bench/bases.py [--device cpu|gpu|auto] [--dtype float32|float64] [--reps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kaem.backend import get_backend  # noqa: E402
from kaem.nn.kan import KANLayer, KANSpec  # noqa: E402
from kaem.priors import UnivariatePrior  # noqa: E402
from timing import interleaved_medians  # noqa: E402

IN, OUT, N = 82, 784, 100


def n_params(layer: KANLayer) -> int:
    return int(sum(v.size for v in layer.params.values()))


def build(be, basis: str, G: int, degree: int = 3, recurrence: bool = False) -> KANLayer:
    spec = KANSpec(basis=basis, grid_size=G, degree=degree, init_tau=0.8, tau_trainable=True)
    layer = KANLayer(be, IN, OUT, spec, be.rng(0))
    if basis == "FFT":
        layer.basis.use_recurrence = recurrence
    return layer


def fwd_bwd_job(layer: KANLayer, x, dy):
    """zero_grad + forward + backward(need_dx=True)."""
    def run() -> None:
        layer.zero_grad()
        layer.forward(x)
        layer.backward(dy, need_dx=True)
    return run


def evaluate_job(layer: KANLayer, x):
    """The basis evaluation with derivatives alone."""
    return lambda: layer.basis.evaluate(x, layer.buffers["grid"], layer.tau, derivs=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--g-fft", type=int, default=50)
    ap.add_argument("--g", type=int, default=20)
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)

    def emit(**rec) -> None:
        print(json.dumps({"device": be.device, "dtype": args.dtype, "in": IN, "out": OUT, "N": N, **rec}),
              flush=True)

    nb_fft = 2 * (args.g_fft + 1)
    configs = [  # (label, basis, G, recurrence)
        ("RBF", "RBF", args.g, False),
        ("B-spline", "B-spline", args.g, False),
        ("RSWAF", "RSWAF", args.g, False),
        ("Cheby", "Cheby", args.g, False),
        ("FFT", "FFT", args.g_fft, False),
        ("FFT-recurrence", "FFT", args.g_fft, True),
        ("RBF-equal-params", "RBF", nb_fft - 1, False),  # nb = G+1 = 2(G_fft+1)
    ]
    rng = be.rng(1)
    x = rng.standard_normal((N, IN), dtype=be.dtype)
    dy = rng.standard_normal((N, OUT), dtype=be.dtype)
    layers = {label: build(be, basis, G, recurrence=rec) for label, basis, G, rec in configs}
    t_fb = interleaved_medians(be, {k: fwd_bwd_job(l, x, dy) for k, l in layers.items()}, args.reps)
    t_ev = interleaved_medians(be, {k: evaluate_job(l, x) for k, l in layers.items()}, args.reps)
    res = {}
    for (label, basis, G, _), layer in zip(configs, layers.values()):
        res[label] = (t_fb[label], n_params(layer))
        res[label + ":eval"] = t_ev[label]
        emit(kind="layer", label=label, basis=basis, G=G, nb=layer.basis.n_basis(),
             params=n_params(layer), fwd_bwd_ms=round(1e3 * t_fb[label], 3),
             evaluate_derivs_ms=round(1e3 * t_ev[label], 3))

    emit(kind="ratio", name="FFT/RBF", G_fft=args.g_fft, G_rbf=args.g,
         time_ratio=round(res["FFT"][0] / res["RBF"][0], 3),
         param_ratio=round(res["FFT"][1] / res["RBF"][1], 3))
    r_eq = res["FFT"][0] / res["RBF-equal-params"][0]
    emit(kind="ratio", name="FFT/RBF equal params", G_fft=args.g_fft, G_rbf=nb_fft - 1,
         time_ratio=round(r_eq, 3), params=[res["FFT"][1], res["RBF-equal-params"][1]],
         target_max=3.0, ok=bool(r_eq <= 3.0))
    # the prior's inverse-transform sampling at the MNIST config (P=20, Q=41, 100 nodes)
    priors = {label: UnivariatePrior(be, 20, 41, KANSpec(basis=basis, grid_size=G), be.rng(0))
              for label, basis, G, rec in configs if not rec and label != "RBF-equal-params"}
    t_its = interleaved_medians(be, {k: (lambda p=p: p.sample(100, rng)) for k, p in priors.items()},
                                args.reps)
    for label, p in priors.items():
        emit(kind="prior_its", label=label, P=20, Q=41, G=p.layer.basis.G, draws=100,
             its_ms=round(1e3 * t_its[label], 3))

    emit(kind="ratio", name="FFT recurrence/direct",
         fwd_bwd_ratio=round(res["FFT-recurrence"][0] / res["FFT"][0], 3),
         evaluate_ratio=round(res["FFT-recurrence:eval"] / res["FFT:eval"], 3))


if __name__ == "__main__":
    main()
