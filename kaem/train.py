"""The training loop: minibatches, gradient steps, Adam, logging, checkpoints.

One iteration = one minibatch of B data: the objective the config selects
(``kaem.langevin.objective_mode``: importance sampling, Langevin MLE with ULA or autoMALA,
or thermodynamic integration) fills the gradients, a finiteness
check guards the update, Adam applies it. Every epoch the held-out log-likelihood and
test MSE are estimated, a CSV row is appended, and a checkpoint is written atomically.
A NaN/inf loss or gradient stops training with an error after saving the last good state
(the parameters before the bad update), never overwriting the regular checkpoint.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from .backend import Backend, to_numpy
from .checkpoint import save_checkpoint
from .config import config_to_ini
from .evaluate import evaluate
from .grid_update import grid_update_due
from .images import save_sample_grid
from .importance import posterior_draws
from .langevin import objective_mode, training_step
from .model import KAEM
from .optim import Adam

CSV_COLUMNS = ("time_s", "epoch", "iteration", "train_loss", "heldout_loglik_nats",
               "bits_per_dim", "test_mse", "ess_mean", "resampled_frac", "grid_updated",
               "accept_rate", "mean_step", "swap_rate", "logZ_quad_err")
# epoch-mean CSV column <- per-iteration diagnostic key of the step function (absent in a
# mode, or NaN throughout an epoch: the cell is left empty)
DIAG_COLUMNS = {"ess_mean": "ess", "resampled_frac": "resampled", "accept_rate": "accept",
                "mean_step": "step", "swap_rate": "swap"}


def _sampler_text(diag: dict[str, Any]) -> str:
    """Posterior-sampler diagnostics for the progress line ("" in IS mode); the values may be
    device scalars, read here (once per progress line, not per iteration)."""
    vals = {key: float(to_numpy(diag[key])) for key in ("accept", "step", "swap") if key in diag}
    parts = [f"{name} {vals[key]:.3g}" for name, key in (("acc", "accept"), ("step", "step"), ("swap", "swap"))
             if key in vals and math.isfinite(vals[key])]
    return "".join(f"| {p} " for p in parts)


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss or gradient)."""


def _seed_for(*words: int) -> int:
    """A 32-bit seed derived from integers, for per-epoch and per-resume streams."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


PROGRESS_EVERY_S = 30.0  # a progress line at least this often, however slow the iterations
SAMPLE_GRID_N = 64  # images in each per-epoch grid OUT/samples/epoch_NNN.png


def sample_grid_rng(be: Backend, seed: int) -> Any:
    """The random stream of the per-epoch sample grids: a fresh generator from (seed, 3),
    independent of the training draws, the same at every epoch and after a resume."""
    return be.rng(_seed_for(seed, 3))


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Trainer:
    """Trains a ``KAEM`` on host arrays ``x_train`` (N, D) and ``x_test`` (M, D).

    The data are copied to the device once; minibatches are gathered there.
    """

    def __init__(self, model: KAEM, be: Backend, x_train: np.ndarray, x_test: np.ndarray,
                 out_dir: str, seed: int = 0, dataset: str = "", log: Callable[[str], None] | None = None,
                 data_info: dict[str, Any] | None = None) -> None:
        cfg = model.cfg
        self.model, self.be, self.out_dir, self.seed, self.dataset = model, be, out_dir, seed, dataset
        self.data_info = data_info or {}  # kaem.datasets.dataset_info: resize, darcy's scaling, ...
        self.t = cfg["TRAINING"]
        self.opt = Adam(model.parameters(), lr=cfg["OPTIMIZER"]["learning_rate"])
        self.x_train = be.asarray(x_train.reshape(x_train.shape[0], -1))
        self.x_test = be.asarray(x_test.reshape(x_test.shape[0], -1))
        self.batch = min(self.t["batch_size"], self.x_train.shape[0])
        self.iters_per_epoch = self.x_train.shape[0] // self.batch
        self.iteration = 0
        self.rng = be.rng(seed)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.elapsed = 0.0  # training seconds before this process (resume)
        self.last_grid_update = 0
        self._perm: tuple[int, Any] = (-1, None)  # (epoch, its permutation of the training rows)
        self.mode = objective_mode(cfg)
        self.sampler_state: dict[str, Any] = {}  # autoMALA's adapted step sizes, across iterations

    # ---- state ----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.iteration // self.iters_per_epoch

    def meta(self) -> dict[str, Any]:
        state = getattr(self.rng, "bit_generator", None)
        rng_state = state.state if self.be.device == "cpu" and state is not None else None
        return {"iteration": self.iteration, "epoch": self.epoch, "seed": self.seed,
                "dataset": self.dataset, "data_shape": list(self.model.data_shape),
                "dtype": np.dtype(self.be.dtype).name, "rng_state": rng_state, "elapsed_s": self.elapsed,
                "last_grid_update": self.last_grid_update, "mode": self.mode,
                "sampler_state": {k: to_numpy(v).tolist() for k, v in self.sampler_state.items()},
                "data": self.data_info}

    def save(self, path: str) -> None:
        save_checkpoint(path, self.model.parameters(), self.model.buffers(), self.opt.state_dict(),
                        config_to_ini(self.model.cfg), self.meta())

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``load_checkpoint`` result: arrays, optimiser, iteration, RNG."""
        self.model.load_arrays(ckpt["params"], ckpt["buffers"])
        self.opt.load_state_dict(ckpt["optimizer"])
        meta = ckpt["meta"]
        self.iteration = int(meta["iteration"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        self.last_grid_update = int(meta.get("last_grid_update", 0))
        self.sampler_state = dict(meta.get("sampler_state") or {})
        if meta.get("rng_state") and self.be.device == "cpu":
            self.rng.bit_generator.state = meta["rng_state"]
        else:  # cupy generators expose no state: continue on a stream fixed by (seed, iteration)
            self.rng = self.be.rng(_seed_for(self.seed, self.iteration))

    # ---- loop -----------------------------------------------------------------------------
    def _batch_indices(self) -> Any:
        """This iteration's rows: a per-epoch permutation fixed by (seed, epoch), so a resumed
        run visits the same batches as an uninterrupted one."""
        if self._perm[0] != self.epoch:  # a uniform random permutation (cupy's Generator has none)
            keys = self.be.rng(_seed_for(self.seed, 1, self.epoch)).random(self.x_train.shape[0])
            self._perm = (self.epoch, self.be.xp.argsort(keys))
        k = self.iteration % self.iters_per_epoch
        return self._perm[1][k * self.batch:(k + 1) * self.batch]

    def _check_finite(self, loss: Any) -> float:
        """One device->host sync per iteration: the loss and the sum of all gradients."""
        xp = self.be.xp
        total = sum(g.sum() for g in self.model.gradients().values())
        loss_f, total_f = to_numpy(xp.stack([loss, total.astype(loss.dtype)])).tolist()
        if not (math.isfinite(loss_f) and math.isfinite(total_f)):
            path = os.path.join(self.out_dir, "last_good.npz")
            self.save(path)
            raise TrainingError(f"non-finite {'loss' if not math.isfinite(loss_f) else 'gradient'} at "
                                f"iteration {self.iteration} (loss {loss_f}); the parameters before this "
                                f"update were saved to {path}; try a smaller OPTIMIZER.learning_rate")
        return loss_f

    def maybe_update_grids(self, diag: dict[str, Any]) -> bool:
        """Grid update on the schedule of GRID_UPDATING, from this step's posterior samples."""
        gu = self.model.cfg["GRID_UPDATING"]
        if not self.t["update_grid"] or not (gu["update_prior_grid"] or gu["update_llhood_grid"]):
            return False
        if not grid_update_due(self.iteration, self.last_grid_update, gu["grid_update_frequency"],
                               gu["grid_update_decay"]):
            return False
        z_post = posterior_draws(diag["z"], diag["w"], gu["num_grid_updating_samples"], self.rng)
        self.last_grid_update = self.iteration
        return self.model.update_grids(z_post, prior=gu["update_prior_grid"], generator=gu["update_llhood_grid"])

    def evaluate(self) -> dict[str, float]:
        rng = self.be.rng(_seed_for(self.seed, 2, self.epoch))  # does not disturb training draws
        return evaluate(self.model, self.x_test, self.t["eval_importance_samples"], rng)

    def _csv_row(self, row: dict[str, Any]) -> None:
        path = os.path.join(self.out_dir, "log.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})

    def run(self, epochs: int, max_iters: int | None = None, log_every: int = 50) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs (counted from iteration 0) or ``max_iters`` iterations
        in total; returns the CSV rows written by this call."""
        os.makedirs(self.out_dir, exist_ok=True)
        total = epochs * self.iters_per_epoch if max_iters is None else min(max_iters, epochs * self.iters_per_epoch)
        rows: list[dict[str, Any]] = []
        if self.iteration == 0 and total > 0:
            rows.append(self._epoch_row(float("nan"), {}))
            self.save_samples()
        t0, start_iter = time.perf_counter(), self.iteration
        last_log = t0
        losses, diags, grid_updates = [], {c: [] for c in DIAG_COLUMNS}, 0
        while self.iteration < total:
            x = self.x_train[self._batch_indices()]
            loss, diag = training_step(self.model, x, self.rng, self.iteration, total, self.sampler_state)
            losses.append(self._check_finite(loss))
            for col, key in DIAG_COLUMNS.items():
                if key in diag:
                    diags[col].append(diag[key])
            self.opt.step(self.model.gradients())
            self.iteration += 1
            grid_updates += self.maybe_update_grids(diag)
            done = self.iteration - start_iter
            now = time.perf_counter()
            if done % log_every == 0 or self.iteration == total or now - last_log >= PROGRESS_EVERY_S:
                last_log, rate = now, done / (now - t0)
                speed = f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it"
                self.log(f"it {self.iteration}/{total} | epoch {self.epoch}/{epochs} | loss {losses[-1]:.2f} "
                         f"{_sampler_text(diag)}| {speed} | ETA {_fmt_time((total - self.iteration) / rate)}")
            epoch_end = self.iteration % self.iters_per_epoch == 0
            if epoch_end or self.iteration == total:
                self.elapsed += time.perf_counter() - t0
                t0, start_iter = time.perf_counter(), self.iteration
                diag_mean = {c: m for c, v in diags.items() if math.isfinite(m := self._epoch_mean(v))}
                diag_mean["grid_updated"] = grid_updates
                rows.append(self._epoch_row(float(np.mean(losses)), diag_mean))
                self.save_samples()
                losses, diags, grid_updates = [], {c: [] for c in DIAG_COLUMNS}, 0
                if not epoch_end or self.epoch % self.t["checkpoint_every"] == 0 or self.iteration == total:
                    self.save(os.path.join(self.out_dir, "ckpt.npz"))
        return rows

    def save_samples(self) -> str | None:
        """At an epoch boundary selected by TRAINING.gen_every (epoch 0 = untrained included),
        write OUT/samples/epoch_NNN.png, a grid of SAMPLE_GRID_N generated images; returns
        its path (None when no grid is due). Written before the epoch's checkpoint, so an
        interrupted run redoes it on resume.

        Fixed latents: every grid draws from the same stream, ``sample_grid_rng`` seeded by
        the run's seed alone (not the training stream), so each grid pushes the same uniforms
        u through that epoch's inverse CDFs: z = F^{-1}(u) are the same quantiles of a prior
        that moves, and a resumed run's grids equal an uninterrupted one's.
        """
        every = self.t["gen_every"]
        if not every or self.iteration % self.iters_per_epoch or self.epoch % every:
            return None
        path = os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png")
        save_sample_grid(path, self.model, SAMPLE_GRID_N, sample_grid_rng(self.be, self.seed))
        return path

    def _epoch_mean(self, values: list[Any]) -> float:
        """Mean of the finite per-iteration values (device scalars or floats); NaN if none.
        One device->host transfer per epoch and column."""
        if not values:
            return float("nan")
        xp = self.be.xp
        a = xp.stack([xp.asarray(v, dtype=xp.float64) for v in values])
        a = a[xp.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    def _epoch_row(self, train_loss: float, diag: dict[str, float]) -> dict[str, Any]:
        ev = self.evaluate()
        row = {"time_s": round(self.elapsed, 3), "epoch": round(self.iteration / self.iters_per_epoch, 4),
               "iteration": self.iteration, "train_loss": train_loss,
               "heldout_loglik_nats": ev["loglik_nats"], "bits_per_dim": ev["bits_per_dim"],
               "test_mse": ev["test_mse"], "logZ_quad_err": ev["logZ_quad_err"], **diag}
        self._csv_row(row)
        self.log(f"[epoch {row['epoch']:g}] held-out log p(x) {ev['loglik_nats']:.2f} nats "
                 f"({ev['bits_per_dim']:.4f} bits/dim, S={ev['S']}, σ={ev['sigma']}) | test MSE {ev['test_mse']:.4f}")
        return row
