#!/usr/bin/env python3
"""What the reliability machinery costs per training iteration, and how the memory
estimate compares with the measured peak.

Per iteration the trainer checks the loss and gradients, copies the parameters and buffers
(the last good state) and checks the parameters after the update (``kaem/guard.py``), and
snapshots the RNG state (``kaem/train.py``). Printed: the median ms of those against the
median ms of one IS iteration, at the MNIST config (RBF, 1.6 M parameters) and the FFT
preset (7.1 M); then ``kaem/memory.py``'s estimate of the MNIST config with N_train images
next to the peak RSS of a few IS iterations on as many random images. Not a test.

    python bench/guards.py [--device cpu|gpu] [--iters 20] [--n-train 5000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.run.guard import FiniteGuard  # noqa: E402
from kaem.objectives.importance import is_step  # noqa: E402
from kaem.run.memory import training_memory  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from timing import timed  # noqa: E402  (bench/timing.py)


def overhead(be, preset: str, iters: int) -> dict:
    model = KAEM(load_config(preset), (1, 28, 28), be, seed=0)
    rng = be.rng(0)
    x = be.asarray(np.random.default_rng(0).random((100, 784)))
    opt, guard = Adam(model.parameters()), FiniteGuard(model)

    def step():
        loss, _ = is_step(model, x, rng)
        opt.step(model.gradients())
        return loss

    loss = step()

    def checks():
        guard.forward_problem(loss)
        guard.keep(0)
        guard.params_finite()
        if be.device == "cpu":
            rng.bit_generator.state  # noqa: B018 (the snapshot the trainer takes)

    t_step = float(np.median(timed(be, step, iters)))
    t_guard = float(np.median(timed(be, checks, iters)))
    return {"preset": preset, "parameters": sum(int(p.size) for p in model.parameters().values()),
            "iteration_ms": round(1e3 * t_step, 2), "guard_ms": round(1e3 * t_guard, 3),
            "guard_share": round(t_guard / t_step, 4)}


def memory(be, n_train: int) -> dict:
    cfg = load_config("mnist")
    est = training_memory(cfg, (1, 28, 28), n_train, 1000, 4)
    model = KAEM(cfg, (1, 28, 28), be, seed=0)
    data = be.asarray(np.random.default_rng(0).random((n_train + 1000, 784), dtype=np.float32))
    opt, guard, rng = Adam(model.parameters()), FiniteGuard(model), be.rng(0)
    for i in range(5):
        is_step(model, data[i * 100:(i + 1) * 100], rng)
        guard.keep(i)
        opt.step(model.gradients())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {"n_train": n_train, "estimate_MiB": round(sum(b for _, b, _ in est) / 2 ** 20, 1),
            "largest": {what: round(b / 2 ** 20, 1) for what, b, _ in est}, "peak_rss_MiB": round(peak, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=5000)
    args = ap.parse_args()
    be = get_backend(args.device, "float32")
    mem = memory(be, args.n_train)  # first: the peak RSS is the process's
    print(json.dumps({"device": be.device, "memory": mem,
                      "overhead": [overhead(be, p, args.iters) for p in ("mnist", "mnist-fft")]}))


if __name__ == "__main__":
    main()
