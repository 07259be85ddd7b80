"""The training loop: minibatches, gradient steps, the optimiser, logging, checkpoints.

One iteration = one minibatch of B data: the objective the config selects
(``kaem.objectives.objective_mode``: importance sampling, Langevin MLE with ULA or autoMALA,
or thermodynamic integration) fills the gradients, a finiteness
check guards the update, the configured optimiser applies it at the learning rate of the
step schedule ([LR_SCHEDULE]). Every epoch the held-out log-likelihood and
test MSE are estimated, a CSV row is appended, and a checkpoint is written atomically.
A NaN/inf loss, gradient or updated parameter stops training with an error after saving
``last_good.npz`` (the parameters of the last finite forward pass, ``kaem/run/guard.py``),
never overwriting the regular checkpoint. A SIGINT/SIGTERM (``kaem/run/signals.py``) ends the
run after the current iteration with a checkpoint of it.

Over several ranks (``mpiexec -n R``, ``kaem/parallel``) every rank runs this loop on the same
minibatches and the same shared random stream: each computes its part of an iteration
(``--parallel data``: its rows of the batch; ``temperatures``: its rungs of the ladder), the
losses and gradients are summed over the ranks before the update, so every rank holds the
same parameters, and rank 0 alone writes checkpoints, logs and sample grids. A stop asked of
any rank stops them all after the same iteration.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from kaem.backend import Backend, to_numpy
from kaem.run.checkpoint import CheckpointError, restore_optimizer, save_checkpoint
from kaem.config import config_to_ini
from kaem.run.logfile import append_row, reconcile
from kaem.evaluation.heldout import evaluate
from kaem.evaluation.report import estimate_text, log_columns, normaliser_text
from kaem.nn.grid_update import grid_update_due
from kaem.run.guard import FiniteGuard
from kaem.plots import save_sample_grid
from kaem.objectives.importance import posterior_draws
from kaem.objectives import objective_mode, training_step
from kaem.model import KAEM
from kaem.build import make_optimizer, step_schedule
from kaem.parallel import SerialComm, Split
from kaem.run.signals import Abandon, Interrupted, StopRequest, signal_name

CSV_COLUMNS = ("time_s", "epoch", "iteration", "train_loss", "heldout_loglik_nats",
               "bits_per_dim", "test_mse", "ess_mean", "resampled_frac", "grid_updated",
               "accept_rate", "mean_step", "swap_rate", "logZ_quad_err", "heldout_loglik_is_pi0_nats",
               "logZ_is", "logZ_is_se", "estimator", "eval_samples", "heldout_loglik_se", "heldout_ess",
               "logZ_quad_err_sum", "logZ_err_flag")  # a log without the last six reads them as empty
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


STREAMS = 2  # the layout of the random numbers (kaem/streams.py); checkpoints of another cannot resume
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

    The data are copied to the device once; minibatches are gathered there. ``data_dir``
    (where the images came from) and M go into the checkpoint's metadata, as the defaults
    of a later evaluation of it.
    """

    def __init__(self, model: KAEM, be: Backend, x_train: np.ndarray, x_test: np.ndarray,
                 out_dir: str, seed: int = 0, dataset: str = "", log: Callable[[str], None] | None = None,
                 data_info: dict[str, Any] | None = None, data_dir: str | None = None, comm: Any = None,
                 parallel: str = "data") -> None:
        cfg = model.cfg
        self.comm, self.parallel = comm or SerialComm(), parallel
        self.writes = self.comm.rank == 0  # rank 0 alone writes files and prints
        self.model, self.be, self.out_dir, self.seed, self.dataset = model, be, out_dir, seed, dataset
        self.data_info = data_info or {}  # kaem.datasets.dataset_info: resize, darcy's scaling, ...
        self.data_dir = data_dir  # the dataset folder, which eval and resume default to (None: not a file set)
        self.t = cfg["TRAINING"]
        self.opt = make_optimizer(model.parameters(), cfg["OPTIMIZER"])
        self.schedule = step_schedule(cfg)
        self.x_train = be.asarray(x_train.reshape(x_train.shape[0], -1))
        self.x_test = be.asarray(x_test.reshape(x_test.shape[0], -1))
        self.batch = min(self.t["batch_size"], self.x_train.shape[0])
        self.iters_per_epoch = self.x_train.shape[0] // self.batch
        self.iteration = 0
        self.rng = be.rng(seed)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.writes:
            self.log = lambda msg: None
        self.elapsed = 0.0  # training seconds before this process (resume)
        self.last_grid_update = 0
        self._perm: tuple[int, Any] = (-1, None)  # (epoch, its permutation of the training rows)
        self.mode = objective_mode(cfg)
        self.sampler_state: dict[str, Any] = {}  # autoMALA's adapted step sizes, across iterations
        self.planned_epochs: int | None = None  # the run's length, which the schedules follow
        self.row_pending = True  # the CSV row of the current iteration is still to be written
        self._acc = _new_epoch_acc()  # per-iteration values of the current epoch, for its row
        self.guard = FiniteGuard(model)
        self.stop = StopRequest()  # inert; run() takes an entered one to stop on signals
        self._t0, self._last_diag = time.perf_counter(), {}

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
                "data": self.data_info, "data_dir": self.data_dir, "n_test": int(self.x_test.shape[0]),
                "streams": STREAMS, "ranks": self.comm.size, "parallel": self.parallel,
                "planned_epochs": self.planned_epochs, "row_pending": self.row_pending,
                "epoch_acc": _acc_to_json(self._acc)}

    def save(self, path: str) -> None:
        save_checkpoint(path, self.model.parameters(), self.model.buffers(), self.opt.state_dict(),
                        config_to_ini(self.model.cfg), self.meta())

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``load_checkpoint`` result: arrays, optimiser, iteration, RNG. A
        checkpoint whose random numbers were laid out otherwise (written before ``streams``)
        is refused: its run could not continue as it would have."""
        if int(ckpt["meta"].get("streams", 1)) != STREAMS:
            raise CheckpointError(f"{ckpt.get('path', 'the checkpoint')} was written by an earlier version, which drew "
                                  "its random numbers in another layout: it samples and evaluates, but cannot be "
                                  "resumed exactly; start a new run")
        self.model.load_arrays(ckpt["params"], ckpt["buffers"])
        restore_optimizer(self.opt, ckpt)
        meta = ckpt["meta"]
        self.iteration = int(meta["iteration"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        self.last_grid_update = int(meta.get("last_grid_update", 0))
        self.sampler_state = dict(meta.get("sampler_state") or {})
        self.planned_epochs = meta.get("planned_epochs")
        self.row_pending = bool(meta.get("row_pending", False))
        self._acc = _acc_from_json(meta.get("epoch_acc"))
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

    def _save_last_good(self, what: str) -> str:
        """Write last_good.npz (the parameters of the last finite forward pass) and return the
        message for the TrainingError."""
        where = f"non-finite {what} at iteration {self.iteration}"
        if self.guard.iteration is None:
            return (f"{where}, before any iteration of this run had a finite forward pass (nothing saved); "
                    "try a smaller OPTIMIZER.learning_rate")
        path = os.path.join(self.out_dir, "last_good.npz")
        params, buffers = self.guard.kept()
        meta = {**self.meta(), "iteration": self.guard.iteration, "epoch": self.guard.iteration // self.iters_per_epoch,
                "rng_state": None, "sampler_state": {}, "epoch_acc": None, "last_good": True}
        if self.writes:
            with self.stop.critical():
                save_checkpoint(path, params, buffers, {}, config_to_ini(self.model.cfg), meta)
        return (f"{where}; the parameters of iteration {self.guard.iteration} (the last with a finite forward "
                f"pass) were saved to {path}; {os.path.join(self.out_dir, 'ckpt.npz')} is untouched; try a smaller "
                "OPTIMIZER.learning_rate")

    def maybe_update_grids(self, diag: dict[str, Any]) -> bool:
        """Grid update on the schedule of GRID_UPDATING: both grids follow the same
        ``num_grid_updating_samples`` posterior draws (the prior's quadrature domain with its
        grid; the generator's layers on h = to_input(z_post), propagated).

        Why posterior draws for the generator too: letting its grid follow all of the step's
        prior samples instead cost 11 nats of held-out log-likelihood at S = 1000 (17 at
        S = 5000) after 10 Fashion-MNIST epochs, lower on each of 3 seeds (README). When the
        draws collapse onto one point (one IS sample carrying all the weight, small S), the
        degenerate-grid guard keeps the old grid with a warning (``kaem/nn/grid_update.py``)."""
        gu = self.model.cfg["GRID_UPDATING"]
        if not self.t["update_grid"] or not (gu["update_prior_grid"] or gu["update_llhood_grid"]):
            return False
        if not grid_update_due(self.iteration, self.last_grid_update, gu["grid_update_frequency"],
                               gu["grid_update_decay"]):
            return False
        self.last_grid_update = self.iteration
        z_post = posterior_draws(diag["z"], diag["w"], gu["num_grid_updating_samples"], self.rng)
        return self.model.update_grids(z_post, prior=gu["update_prior_grid"], generator=gu["update_llhood_grid"])

    def evaluate(self) -> dict[str, float]:
        rng = self.be.rng(_seed_for(self.seed, 2, self.epoch))  # does not disturb training draws
        return evaluate(self.model, self.x_test, self.t["eval_importance_samples"], rng)

    def run(self, epochs: int, max_iters: int | None = None, log_every: int = 50,
            stop: StopRequest | None = None) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs (counted from iteration 0) or ``max_iters`` iterations
        in total; returns the CSV rows written by this call.

        ``epochs`` is the planned length the schedules (thermo's p) are laid over; ``max_iters``
        only stops early, so a run split by ``max_iters`` and resumed equals an uninterrupted
        one. With ``stop`` (an entered :class:`StopRequest`), a signal ends the run after
        the current iteration (a second one abandons it): the last completed iteration is
        checkpointed and :class:`Interrupted` raised.
        """
        self.stop = stop or StopRequest()
        os.makedirs(self.out_dir, exist_ok=True)
        self.planned_epochs = epochs
        planned = epochs * self.iters_per_epoch
        total = planned if max_iters is None else min(max_iters, planned)
        if self.writes:
            reconcile(os.path.join(self.out_dir, "log.csv"), CSV_COLUMNS, self.iteration, self.row_pending)
        rows: list[dict[str, Any]] = []
        self._t0, start_iter = time.perf_counter(), self.iteration
        t_start = last_log = self._t0
        try:
            if self.row_pending and self.iteration <= total:
                rows.append(self._flush_row())
            while self.iteration < total and not self._stop_asked():
                if not self._iterate(planned, total):
                    break
                done = self.iteration - start_iter
                now = time.perf_counter()
                if done % log_every == 0 or self.iteration == total or now - last_log >= PROGRESS_EVERY_S:
                    last_log, rate = now, done / (now - t_start)
                    speed = f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it"
                    self.log(f"it {self.iteration}/{total} | epoch {self.epoch}/{epochs} | loss {self._acc['loss'][-1]:.2f} "
                             f"{_sampler_text(self._last_diag)}| {speed} | ETA {_fmt_time((total - self.iteration) / rate)}")
                epoch_end = self.iteration % self.iters_per_epoch == 0
                if self.row_pending:  # set by the iteration at an epoch end or the last one
                    rows.append(self._flush_row())
                    every = self.t["checkpoint_every"]  # <= 0: only at the end
                    if not epoch_end or (every > 0 and self.epoch % every == 0) or self.iteration == total:
                        self._save_ckpt()
        except Abandon:
            pass  # the iteration or row in progress was given up; what is complete is saved below
        if self._stop_asked():
            path = self._save_ckpt()
            raise Interrupted(self.stop.signum, f"{signal_name(self.stop.signum)}: training stopped at iteration "
                                                f"{self.iteration}, saved {path}; continue with --resume {path}")
        return rows

    def _iterate(self, planned: int, total: int) -> bool:
        """One training iteration; False if a second signal abandoned it (the random
        stream and sampler state are then rewound to before it, unless it had completed)."""
        rng_state = self.rng.bit_generator.state if self.be.device == "cpu" else None
        sampler_state = {k: list(v) if isinstance(v, list) else v for k, v in self.sampler_state.items()}
        committed = False
        try:
            rows = self._batch_indices()
            split = Split.of(self.comm, int(rows.shape[0]), self.parallel)
            x = self.x_train[rows[split.lo:split.hi]]
            loss, diag = training_step(self.model, x, self.rng, self.iteration, planned, self.sampler_state, split)
            loss = self._summed(loss)
            loss_f, bad = self.guard.forward_problem(loss)
            if bad:
                raise TrainingError(self._save_last_good(bad))
            with self.stop.critical():  # the update and its bookkeeping happen entirely or not at all
                self.guard.keep(self.iteration)
                self._set_lr()
                self.opt.step(self.model.gradients())
                if not self.guard.params_finite():
                    raise TrainingError(self._save_last_good("parameters after the optimiser step"))
                self.iteration += 1
                self._acc["loss"].append(loss_f)
                for col, key in DIAG_COLUMNS.items():
                    if key in diag:
                        self._acc[col].append(diag[key])
                self._acc["grid_updated"] += self.maybe_update_grids(diag)
                self._last_diag = diag
                self.row_pending = self.iteration % self.iters_per_epoch == 0 or self.iteration == total
                committed = True
        except Abandon:
            if not committed:
                if rng_state is not None:
                    self.rng.bit_generator.state = rng_state
                self.sampler_state = sampler_state
            return False
        return True

    def _summed(self, loss: Any) -> Any:
        """The loss and the gradients summed over the ranks (each holds its share), in one
        reduction; the loss is returned, the gradients are summed in place."""
        if self.comm.size == 1:
            return loss
        total = self.be.xp.asarray(loss).reshape(1).astype(next(iter(self.model.gradients().values())).dtype)
        self.comm.allreduce_(total, *self.model.gradients().values())
        return total[0]

    def _stop_asked(self) -> bool:
        """Whether a signal asked any rank to stop (so that all stop after the same iteration)."""
        return self.comm.any(self.stop.requested) if self.comm.size > 1 else self.stop.requested

    def _clock(self) -> None:
        """Add the time since the last call to ``elapsed`` (training seconds of the run)."""
        now = time.perf_counter()
        self.elapsed += now - self._t0
        self._t0 = now

    def _save_ckpt(self) -> str:
        path = os.path.join(self.out_dir, "ckpt.npz")
        with self.stop.critical():
            self._clock()
            if self.writes:
                self.save(path)
        return path

    def _flush_row(self) -> dict[str, Any]:
        """Evaluate, write the pending CSV row from the epoch's accumulated values, reset them."""
        self._clock()
        diag_mean = {c: m for c in DIAG_COLUMNS if math.isfinite(m := self._epoch_mean(self._acc[c]))}
        if self._acc["loss"]:
            diag_mean["grid_updated"] = self._acc["grid_updated"]
        row = self._epoch_row(self._epoch_mean(self._acc["loss"]), diag_mean)
        self.save_samples()
        self._acc, self.row_pending = _new_epoch_acc(), False
        return row

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
        if not every or self.iteration % self.iters_per_epoch or self.epoch % every or not self.writes:
            return None
        path = os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png")
        save_sample_grid(path, self.model, SAMPLE_GRID_N, sample_grid_rng(self.be, self.seed))
        return path

    def _set_lr(self) -> None:
        """The schedule's rate for this epoch; a change is logged."""
        lr = self.schedule.lr_at(self.epoch)
        if lr != self.opt.lr:
            self.log(f"[epoch {self.epoch}] learning rate {self.opt.lr:g} -> {lr:g}")
            self.opt.lr = lr

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
               "test_mse": ev["test_mse"], **diag}
        # the prior's normaliser check: quadrature error, or the deep prior's importance
        # sampling from π0 (held-out estimate, log Z and its standard error)
        row.update({k: ev[k] for k in ("logZ_quad_err", "logZ_is", "logZ_is_se") if k in ev}, **log_columns(ev))
        if "loglik_is_pi0_nats" in ev:
            row["heldout_loglik_is_pi0_nats"] = ev["loglik_is_pi0_nats"]
        if self.writes:  # every rank evaluates (the same numbers): none waits for another
            append_row(os.path.join(self.out_dir, "log.csv"), CSV_COLUMNS, row)
        self.log(f"[epoch {row['epoch']:g}] held-out log p(x) {estimate_text(ev)} | {ev['bits_per_dim']:.4f} bits/dim, "
                 f"σ={ev['sigma']} | {normaliser_text(ev)} | test MSE {ev['test_mse']:.4f}")
        return row


def _new_epoch_acc() -> dict[str, Any]:
    """Per-iteration values of the current epoch: the loss, each diagnostic column, and the
    number of grid updates."""
    return {"loss": [], **{c: [] for c in DIAG_COLUMNS}, "grid_updated": 0}


def _acc_to_json(acc: dict[str, Any]) -> dict[str, Any]:
    """The accumulators as JSON numbers (device scalars copied to the host; checkpoint time only)."""
    return {k: v if isinstance(v, int) else [float(x) for x in v] for k, v in acc.items()}


def _acc_from_json(data: Any) -> dict[str, Any]:
    acc = _new_epoch_acc()
    for k, v in (data or {}).items():
        if k in acc:
            acc[k] = int(v) if k == "grid_updated" else [float(x) for x in v]
    return acc
