#!/usr/bin/env python3
"""Scaling of the posterior samplers at the MNIST config, and the cost of a thermodynamic
iteration against an importance-sampling one.

The reference's scaling benches (``benches/temperatures.jl``, ``prior_steps.jl``,
``latent_dim.jl``), on this machine, MNIST architecture (P=20, Q=41, generator 41->82->784,
RBF G=20, batch 100, float32), one KAEM posterior target per minibatch:

* time of the thermodynamic sampler (``thermo_sample``, ULA, ``--steps-per-temp`` steps,
  replica exchange every step) vs the number of temperatures N_t = 2..12 (B·N_t chains);
* time of the ULA posterior sampler (B chains) vs the number of Langevin steps 10..50;
* time of the ULA posterior sampler (20 steps) vs the latent dimension n_z = 10..50 with the
  reference's scaling P = n_z, Q = 2n_z+1, generator Q -> 2Q -> 784 (and, for comparison,
  the IS step, which is what the reference's latent_dim bench timed).

Each point is the median of ``--repeats`` runs after a warm-up. Fits: least-squares line
(slope, intercept, R²) and the log-log exponent d log t / d log n (1 = linear).

Then one training iteration (step function + Adam) in thermo mode — 5 temperatures, 20 ULA
steps each, batch 100 — against an IS iteration (S = 100), both at the MNIST config, and a
breakdown of where the thermo iteration's time goes (timers around the target's prior and
likelihood evaluations, inverse-transform sampling, the loss, Adam; and the top functions
of a cProfile run).

Writes OUT/samplers.csv (one row per measured point), OUT/samplers.png (three panels,
drawn with Pillow) and prints one JSON object with the slopes, the ratio and the breakdown.

    python bench/samplers.py [--device cpu|gpu] [--dtype float32] [--repeats 3] [--out runs/bench]
"""
from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import os
import pstats
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kaem.objectives as lv  # noqa: E402
from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.objectives.importance import is_step  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from kaem.plots import Series, canvas, panel, save_image  # noqa: E402
from kaem.likelihood.posterior import KAEMPosterior  # noqa: E402
from kaem.samplers import temperature_ladder, thermo_sample, ula  # noqa: E402
from timing import backend_args, timed  # noqa: E402  (bench/timing.py)

TEMPS = (2, 4, 6, 8, 10, 12)
STEPS = (10, 20, 30, 40, 50)
LATENT = (10, 20, 30, 40, 50)


# --------------------------------------------------------------------------- helpers

def median_time(be: Any, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    return float(np.median(timed(be, fn, repeats, warmup)))


def fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line and log-log exponent of y against x."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    slope, icpt = np.polyfit(x, y, 1)
    pred = slope * x + icpt
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    expo = np.polyfit(np.log(x), np.log(y), 1)[0]
    return {"slope_s": float(slope), "intercept_s": float(icpt), "r2": float(r2), "loglog_exponent": float(expo)}


def load_batch(B: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """B real Fashion-MNIST test images if installed (timings of ULA do not depend on the
    pixels; autoMALA's do, mildly), else uniform noise."""
    try:
        from kaem.datasets import load_dataset

        return load_dataset("fmnist", "test", "data", download=False, n=B).reshape(B, -1), "fmnist test images"
    except Exception:  # noqa: BLE001 - any failure: fall back to noise, say so in the output
        return np.random.default_rng(seed).random((B, 784), dtype=np.float32), "uniform noise (fmnist missing)"


def make_model(be: Any, dtype: str, extra: list[str] = (), n_z: int | None = None) -> KAEM:
    ov = [f"TRAINING.dtype={dtype}", *extra]
    if n_z is not None:
        ov += [f"EbmModel.layer_widths={n_z},{2 * n_z + 1}", f"GeneratorModel.widths={2 * n_z + 1},{4 * n_z + 2}"]
    return KAEM(load_config("mnist", overrides=ov), (1, 28, 28), be, seed=0)


# --------------------------------------------------------------------------- sweeps

def sweep_temperatures(be, dtype, x, repeats, steps_per_temp) -> list[dict]:
    m = make_model(be, dtype)
    eta = m.cfg["POST_LANGEVIN"]["initial_step_size"]
    target, rng, B = KAEMPosterior(m, x), be.rng(1), x.shape[0]
    rows = []
    for n_t in TEMPS:
        temps = temperature_ladder(n_t, 4.0)[1:]  # the sampled rungs t_1..t_N (t_0: exact prior draws)
        z0 = m.sample_prior(n_t * B, rng)
        t = median_time(be, lambda: thermo_sample(target, z0, temps, steps_per_temp, eta, rng, exchange_every=1),
                        repeats)
        rows.append({"bench": "temperatures", "x": n_t, "seconds": t,
                     "note": f"thermo_sample ULA, {steps_per_temp} steps/temp, B={B}, {n_t * B} chains"})
        print(f"  N_t={n_t:2d}: {t:.3f} s", file=sys.stderr)
    return rows


def sweep_steps(be, dtype, x, repeats) -> list[dict]:
    m = make_model(be, dtype)
    eta = m.cfg["POST_LANGEVIN"]["initial_step_size"]
    target, rng, B = KAEMPosterior(m, x), be.rng(2), x.shape[0]
    z0 = m.sample_prior(B, rng)
    rows = []
    for n in STEPS:
        t = median_time(be, lambda: ula(target, z0, 1.0, eta, n, rng), repeats)
        rows.append({"bench": "steps", "x": n, "seconds": t, "note": f"ULA posterior sampler, B={B} chains"})
        print(f"  steps={n:2d}: {t:.3f} s", file=sys.stderr)
    return rows


def sweep_latent(be, dtype, x, repeats) -> list[dict]:
    rows = []
    B = x.shape[0]
    for n_z in LATENT:
        m = make_model(be, dtype, n_z=n_z)
        eta = m.cfg["POST_LANGEVIN"]["initial_step_size"]
        target, rng = KAEMPosterior(m, x), be.rng(3)
        z0 = m.sample_prior(B, rng)
        t = median_time(be, lambda: ula(target, z0, 1.0, eta, 20, rng), repeats)
        t_is = median_time(be, lambda: is_step(m, x, rng), repeats)
        rows.append({"bench": "latent_dim", "x": n_z, "seconds": t,
                     "note": f"ULA 20 steps, B={B}; P={n_z} Q={2 * n_z + 1} gen {2 * n_z + 1}->{4 * n_z + 2}->784"})
        rows.append({"bench": "latent_dim_is_step", "x": n_z, "seconds": t_is, "note": "is_step, S=100"})
        print(f"  n_z={n_z:2d}: ULA {t:.3f} s, IS step {t_is:.3f} s", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- ratio and profile

def thermo_vs_is(be, dtype, x, repeats, sampler: str = "ula") -> dict[str, Any]:
    """Median seconds of a thermo iteration (5 temps × 20 steps, batch 100) and of an IS
    iteration, each = step function + Adam, measured interleaved (shared machines drift)."""
    thermo_ov = ["THERMODYNAMIC_INTEGRATION.num_temps=5", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=20"]
    if sampler == "automala":
        thermo_ov.append("POST_LANGEVIN.use_autoMALA=true")
    mt, mi = make_model(be, dtype, thermo_ov), make_model(be, dtype)
    ot, oi = Adam(mt.parameters()), Adam(mi.parameters())
    rng, state = be.rng(4), {}

    def it_thermo():
        lv.thermo_step(mt, x, rng, iteration=0, n_updates=100, state=state)
        ot.step(mt.gradients())

    def it_is():
        is_step(mi, x, rng)
        oi.step(mi.gradients())

    it_thermo(), it_is()
    tt, ti = [], []
    for _ in range(repeats):
        tt.append(median_time(be, it_thermo, 1, warmup=0))
        ti.append(median_time(be, it_is, 5, warmup=0))
    t_th, t_is = float(np.median(tt)), float(np.median(ti))
    return {"sampler": sampler, "thermo_iteration_s": t_th, "is_iteration_s": t_is, "ratio": t_th / t_is,
            "target_ratio": 25.0, "chain_evaluations": 5 * 100 * 20}


def breakdown(be, dtype, x) -> dict[str, Any]:
    """Where one thermo iteration's time goes: timers around its parts, plus cProfile."""
    m = make_model(be, dtype, ["THERMODYNAMIC_INTEGRATION.num_temps=5",
                               "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=20"])
    opt, rng = Adam(m.parameters()), be.rng(5)
    acc: dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            be.synchronize()
            t = time.perf_counter()
            out = fn(*a, **k)
            be.synchronize()
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    patches = [(KAEMPosterior, "log_prior", "sampler: prior value + z-gradient"),
               (KAEMPosterior, "log_lik", "sampler: likelihood value + z-gradient (generator fwd+bwd)"),
               (lv, "thermo_loss_and_grad", "loss + parameter gradients"),
               (KAEM, "sample_prior", "inverse-transform prior draws")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, label in patches:
            setattr(obj, name, timed(label, getattr(obj, name)))
        step = timed("total", lambda: (lv.thermo_step(m, x, rng, 0, 100), timed("Adam", opt.step)(m.gradients())))
        step()  # warm-up
        acc.clear()
        step()
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    total = acc.pop("total")
    parts = {k: round(v, 4) for k, v in acc.items()}
    parts["sampler: ULA updates, RNG, replica exchange"] = round(total - sum(acc.values()), 4)
    share = {k: round(v / total, 3) for k, v in parts.items()}

    prof = cProfile.Profile()
    prof.enable()
    lv.thermo_step(m, x, rng, 0, 100)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    top = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:8]  # by own time
    top_fns = [{"function": f"{os.path.relpath(f[0]) if os.path.isabs(f[0]) else f[0]}:{f[1]}({f[2]})",
                "calls": s[1], "own_s": round(s[2], 4)} for f, s in top]
    return {"total_s": round(total, 4), "seconds": parts, "share": share, "top_functions_by_own_time": top_fns}


# --------------------------------------------------------------------------- outputs

def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["bench", "x", "seconds", "note"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "seconds": f"{r['seconds']:.6f}"})


def plot_png(path: str, panels: list[tuple[str, str, list[float], list[float], dict]]) -> None:
    """Three scatter + fitted-line panels drawn with Pillow (``kaem.plots``, no plotting library)."""
    W, H = 420, 330
    img, d = canvas(W * len(panels), H)
    for i, (title, xlabel, xs, ys, f) in enumerate(panels):
        slope, icpt = f["slope_s"], f["intercept_s"]
        panel(d, (i * W, 0, W, H), [Series(xs, ys, kind="scatter")], title=title,
              subtitle=f"slope {slope * 1e3:.1f} ms/unit, R2 {f['r2']:.3f}, log-log exp {f['loglog_exponent']:.2f}",
              xlabel=xlabel, ylabel="seconds", xlim=(min(xs), max(xs)),
              ylim=(0.0, max(max(ys), slope * max(xs) + icpt) * 1.1), xticks=xs, yticks=5, fit=(slope, icpt))
    save_image(path, img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    ap.add_argument("--steps-per-temp", type=int, default=10, help="ULA steps per temperature in the N_t sweep")
    ap.add_argument("--automala", action="store_true", help="also time a thermo iteration with autoMALA (slow)")
    ap.add_argument("--out", default=os.path.join("runs", "bench"), help="folder for samplers.csv / samplers.png")
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    xh, source = load_batch(100)
    x = be.asarray(xh)

    print("temperatures ...", file=sys.stderr)
    rows = sweep_temperatures(be, args.dtype, x, args.repeats, args.steps_per_temp)
    print("Langevin steps ...", file=sys.stderr)
    rows += sweep_steps(be, args.dtype, x, args.repeats)
    print("latent dimension ...", file=sys.stderr)
    rows += sweep_latent(be, args.dtype, x, args.repeats)

    def series(name):
        sel = [r for r in rows if r["bench"] == name]
        return [r["x"] for r in sel], [r["seconds"] for r in sel]

    fits = {name: fit(*series(name)) for name in ("temperatures", "steps", "latent_dim", "latent_dim_is_step")}
    # The prior's work per chain is Q·P = n_z(2n_z+1) univariate functions: quadratic in n_z.
    # Against Q·P (the generator's part is linear in n_z) the sampler time is near linear.
    nz, tz = series("latent_dim")
    fits["latent_dim_vs_prior_functions"] = fit([n * (2 * n + 1) for n in nz], tz)
    print("thermo vs IS iteration ...", file=sys.stderr)
    ratio = thermo_vs_is(be, args.dtype, x, args.repeats)
    ratios = [ratio]
    if args.automala:
        ratios.append(thermo_vs_is(be, args.dtype, x, 1, sampler="automala"))
    for r in ratios:
        rows.append({"bench": f"thermo_iteration_{r['sampler']}", "x": 5, "seconds": r["thermo_iteration_s"],
                     "note": "thermo_step + Adam, 5 temps x 20 steps, B=100"})
    rows.append({"bench": "is_iteration", "x": 100, "seconds": ratio["is_iteration_s"],
                 "note": "is_step + Adam, S=100, B=100"})
    print("breakdown ...", file=sys.stderr)
    where = breakdown(be, args.dtype, x)

    csv_path, png_path = os.path.join(args.out, "samplers.csv"), os.path.join(args.out, "samplers.png")
    write_csv(csv_path, rows)
    plot_png(png_path, [
        (f"thermo sampler ({args.steps_per_temp} ULA steps/temp, B=100)", "number of temperatures N_t",
         *series("temperatures"), fits["temperatures"]),
        ("ULA posterior sampler (B=100)", "Langevin steps", *series("steps"), fits["steps"]),
        ("ULA 20 steps, P=n_z, Q=2n_z+1", "latent dimension n_z", *series("latent_dim"), fits["latent_dim"]),
    ])
    print(json.dumps({
        "device": be.device, "dtype": args.dtype, "data": source, "repeats": args.repeats,
        "cpus": os.cpu_count(), "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "fits": fits, "thermo_vs_is": ratios, "thermo_iteration_breakdown": where,
        "csv": csv_path, "png": png_path, "bench_seconds": round(time.perf_counter() - t_start, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
