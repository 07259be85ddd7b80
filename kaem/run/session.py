"""A training session from command options: what ``cli.py train`` does, for the Python API
too.

``plan_training(options)`` checks everything that needs no checkpoint and writes nothing:
the config the options build (preset, INI file, ``--set``, ``--mode``), the output folder,
and whether OUT/ckpt.npz already holds a run (refused, unless ``resume_existing``).
``run_training(plan)`` then

1. for a new run: checks the memory estimate and loads the data, then takes the run lock;
2. for a resumed run: takes the run lock first and only then reads and validates the
   checkpoint, so a trainer that finishes meanwhile cannot have its newer checkpoint
   overwritten by a resume that read the older one;
3. stops there, exit status 0, once the checkpoint, the data and the model have passed every
   check, if the stored run is finished (``finished_text``);
4. trains, holding the lock, stopping cleanly on SIGINT/SIGTERM (``kaem/run/signals.py``).

Started by ``mpiexec -n R``, every rank runs the session: rank 0 takes the lock and the
others wait for it (and fail with its error), then all train together (``kaem/parallel``).

A failure after the lock was taken removes the output folder again if this session made
it and it is still empty; existing checkpoints are never written by a failing session.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from kaem.run.data import NO_DOWNLOAD_HINT, DataSource, load_splits, stored_data_dir, stored_n_test
from kaem.run.failures import CommandError

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


@dataclass
class TrainOptions:
    """The options of ``train`` (``cli.py train --help`` explains each); None means "the
    config's value" (or, resuming, the checkpoint's)."""

    dataset: str | None = None
    preset: str | None = None
    config: str | None = None
    mode: str | None = None
    out: str | None = None
    resume: str | None = None
    resume_existing: bool = False
    overrides: list[str] = field(default_factory=list)
    epochs: int | None = None
    max_iters: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    batch_size: int | None = None
    dtype: str | None = None
    log_every: int = 50
    resize: int | None = None
    device: str = "cpu"
    seed: int = 0
    data_dir: str | None = None
    parallel: str = "data"
    download: bool = True
    offline_hint: str = ""  # added to a missing dataset's error when download is off

    @classmethod
    def from_args(cls, args: Any) -> "TrainOptions":
        """The options of a parsed ``train`` command line (argparse's ``set`` and
        ``no_download`` become ``overrides`` and ``download``)."""
        names = set(cls.__dataclass_fields__) - {"overrides", "download", "offline_hint"}
        return cls(**{k: getattr(args, k) for k in names if hasattr(args, k)}, overrides=list(args.set),
                   download=not args.no_download, offline_hint=NO_DOWNLOAD_HINT)


@dataclass
class TrainingPlan:
    """What ``plan_training`` settled: the output folder, the config and data of a new run
    (``cfg``, ``dataset``, ``resize``; for ``--resume`` they come from the checkpoint), and
    the checkpoint to continue (``resume``; ``existing``: OUT/ckpt.npz found with
    ``resume_existing``, which must be the run these options describe)."""

    options: TrainOptions
    out: str
    cfg: Any = None
    dataset: str | None = None
    resize: int | None = None
    resume: str | None = None
    existing: bool = False


def mode_overrides(mode: str, num_temps: int) -> list[str]:
    """The --set overrides that ``--mode`` stands for, given the configured num_temps.

    is/ula/automala also set num_temps=1 (thermodynamic integration would take precedence);
    thermo keeps the configured inner sampler (ULA, or autoMALA with use_autoMALA=true).
    """
    ti = "THERMODYNAMIC_INTEGRATION.num_temps"
    if mode == "is":
        return ["POST_LANGEVIN.use_langevin=false", f"{ti}=1"]
    if mode in ("ula", "automala"):
        return ["POST_LANGEVIN.use_langevin=true", f"POST_LANGEVIN.use_autoMALA={str(mode == 'automala').lower()}",
                f"{ti}=1"]
    if mode == "thermo":
        return [f"{ti}=5"] if num_temps <= 1 else []
    from kaem.objectives import MODES

    raise CommandError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")


def build_config(opts: TrainOptions) -> tuple[Any, str, str]:
    """(config, dataset, preset) of a new run: the preset's defaults (default: the
    dataset's), then ``--config``, then ``--mode``'s keys, then ``--set`` and the TRAINING
    shorthands; a --set that contradicts --mode is a CommandError."""
    from kaem.config import load_config, preset_dataset
    from kaem.objectives import objective_mode

    preset = opts.preset or opts.dataset or "mnist"
    dataset = opts.dataset or preset_dataset(preset)
    if preset_dataset(preset) != dataset:
        raise CommandError(f"--preset {preset} is for {preset_dataset(preset)}, not --dataset {dataset}")
    overrides = list(opts.overrides)
    for key, val in (("N_train", opts.n_train), ("batch_size", opts.batch_size), ("dtype", opts.dtype)):
        if val is not None:
            overrides.append(f"TRAINING.{key}={val}")
    if opts.mode:  # the mode's keys first, so that explicit --set values win
        num_temps = load_config(preset, opts.config, overrides)["THERMODYNAMIC_INTEGRATION"]["num_temps"]
        overrides = mode_overrides(opts.mode, num_temps) + overrides
    cfg = load_config(preset, opts.config, overrides)
    if opts.mode and objective_mode(cfg) != opts.mode:
        raise CommandError(f"--mode {opts.mode} conflicts with the --set/--config values, which select "
                           f"{objective_mode(cfg)}")
    return cfg, dataset, preset


def refuse_existing_run(out: str) -> None:
    """A CommandError if ``out`` already holds a checkpoint (a new run never replaces one)."""
    existing = os.path.join(out, "ckpt.npz")
    if os.path.exists(existing):
        raise CommandError(f"{existing} already exists; continue it with --resume {existing} "
                           "(or --resume-existing) or choose another --out")


def existing_run(path: str, cfg: Any, dataset: str, seed: int) -> dict[str, Any]:
    """The checkpoint at ``path`` if it continues the run these options describe (same
    dataset, seed and config); otherwise a CommandError naming what differs."""
    from kaem.config import config_diff
    from kaem.run.checkpoint import checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(path, for_resume=True)
    meta = ckpt["meta"]
    diff = config_diff(checkpoint_config(ckpt), cfg)
    if meta.get("dataset") != dataset:
        diff.insert(0, f"dataset: {meta.get('dataset')} stored, {dataset} asked")
    if int(meta.get("seed", 0)) != seed:
        diff.insert(0, f"seed: {meta.get('seed')} stored, {seed} asked")
    if diff:
        raise CommandError(f"{path} is a different run ({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}); "
                           f"continue it with --resume {path}, or choose another --out")
    return ckpt


def plan_training(opts: TrainOptions) -> TrainingPlan:
    """Check the options and settle the output folder and config without writing anything
    (module doc); CommandError or ConfigError naming the bad option otherwise."""
    from kaem.run.checkpoint import check_checkpoint_path

    if opts.resume:
        if opts.config or opts.overrides or opts.n_train or opts.batch_size or opts.dtype or opts.preset:
            raise CommandError("--resume continues the stored run: --config, --preset, --set, --n-train, "
                               "--batch-size and --dtype cannot change it (start a new run with --out instead)")
        check_checkpoint_path(opts.resume)
        plan = TrainingPlan(opts, opts.out or os.path.dirname(os.path.abspath(opts.resume)), resume=opts.resume)
    else:
        cfg, dataset, preset = build_config(opts)
        plan = TrainingPlan(opts, opts.out or os.path.join("runs", preset), cfg, dataset, opts.resize)
        existing = os.path.join(plan.out, "ckpt.npz")
        if os.path.exists(existing):
            if not opts.resume_existing:
                refuse_existing_run(plan.out)
            plan.resume, plan.existing = existing, True
    if os.path.exists(plan.out) and not os.path.isdir(plan.out):
        raise CommandError(f"--out {plan.out} exists and is not a folder")
    return plan


def _read_resumed(plan: TrainingPlan) -> dict[str, Any]:
    """The checkpoint to continue, read and validated (under the run lock), with the plan's
    config, dataset and image size taken from it; a CommandError if the options contradict it."""
    from kaem.objectives import objective_mode
    from kaem.run.checkpoint import checkpoint_config, load_checkpoint

    opts = plan.options
    if plan.existing:
        return existing_run(plan.resume, plan.cfg, plan.dataset, opts.seed)
    ckpt = load_checkpoint(plan.resume, for_resume=True)
    dataset = ckpt["meta"]["dataset"]
    if not dataset:
        raise CommandError(f"{plan.resume} was saved from the Python API without a dataset name; "
                           "continue it there, or start a new run")
    if opts.dataset and opts.dataset != dataset:
        raise CommandError(f"--dataset {opts.dataset} differs from the checkpoint's dataset {dataset}")
    cfg = checkpoint_config(ckpt)
    resize = (ckpt["meta"].get("data") or {}).get("resize")
    if opts.resize and opts.resize != resize:
        raise CommandError(f"--resize {opts.resize} differs from the checkpoint's image size (resize {resize})")
    if opts.mode and opts.mode != objective_mode(cfg):
        raise CommandError(f"--mode {opts.mode} differs from the checkpoint's objective {objective_mode(cfg)} "
                           "(a resumed run keeps its objective)")
    plan.cfg, plan.dataset, plan.resize = cfg, dataset, resize
    return ckpt


def finished_text(trainer: Any, epochs: int, max_iters: int | None, name: str) -> str | None:
    """Why the restored run ``name`` has nothing left to train (its iteration has reached
    ``epochs`` epochs, or ``max_iters``), or None if it has; a run whose last epoch row is
    still to be written is not finished."""
    it, ipe = trainer.iteration, trainer.iters_per_epoch
    planned = epochs * ipe
    if trainer.row_pending or it < (planned if max_iters is None else min(max_iters, planned)):
        return None
    at = f"epoch {round(it / ipe, 2):g} of {epochs}"
    if it >= planned:
        return f"{name} is finished ({at}); nothing to train — raise --epochs to continue"
    return (f"{name} has reached --max-iters {max_iters} (iteration {it}, {at}); nothing to train — "
            "raise --max-iters to continue")


def _prepare(plan: TrainingPlan, ckpt: dict[str, Any] | None, log: Log, comm: Any) -> Any:
    """Memory check, data, model and Trainer of the plan (restored from ``ckpt`` if given)."""
    from kaem.backend import get_backend
    from kaem.datasets import dataset_info, dataset_shape
    from kaem.model import KAEM
    from kaem.run.checkpoint import restore_model
    from kaem.run.memory import check_training_memory
    from kaem.run.ranks import check_split, use_local_device
    from kaem.run.trainer import Trainer

    opts, cfg = plan.options, plan.cfg
    t = cfg["TRAINING"]
    meta = ckpt["meta"] if ckpt is not None else {}
    data_dir = stored_data_dir(meta, opts.data_dir)
    n_test = stored_n_test(meta, opts.n_test, cfg)
    be = get_backend(opts.device, t["dtype"])
    use_local_device(be, comm)
    check_split(comm, opts.parallel, cfg, min(t["batch_size"], t["N_train"]))
    check_training_memory(cfg, dataset_shape(plan.dataset, plan.resize), t["N_train"], n_test, be)
    x_train, x_test = load_splits(plan.dataset, DataSource(data_dir, opts.download, opts.offline_hint),
                                  t["N_train"], n_test, plan.resize)
    info = dataset_info(plan.dataset, data_dir, plan.resize)
    if ckpt is not None:
        stored = meta.get("data") or {"resize": None}
        if stored != info:
            raise CommandError(f"the data differ from those the checkpoint was trained on: {info} here, "
                               f"{stored} stored")
        model, seed = restore_model(ckpt, be), int(meta["seed"])
    else:
        seed = opts.seed
        model = KAEM(cfg, dataset_shape(plan.dataset, plan.resize), be, seed=seed)
    trainer = Trainer(model, be, x_train, x_test, plan.out, seed=seed, dataset=plan.dataset, log=log,
                      data_info=info, data_dir=data_dir, comm=comm, parallel=opts.parallel)
    if ckpt is not None:
        trainer.restore(ckpt)
    return trainer


def run_training(plan: TrainingPlan, log: Log = _stderr, comm: Any = None) -> int:
    """Train as planned (module doc): 0 when training ended or the run was already
    finished; a signal raises :class:`~kaem.run.signals.Interrupted` after checkpointing.
    ``comm``: the ranks of a parallel run (default: MPI's when started by mpiexec)."""
    from kaem.parallel import get_comm
    from kaem.run.ranks import lock_on_rank0
    from kaem.run.signals import StopRequest

    opts, comm = plan.options, comm or get_comm()
    if comm.rank != 0:
        log = _silent
    trainer = _prepare(plan, None, log, comm) if plan.resume is None else None
    with lock_on_rank0(comm, plan.out) as lock:  # the first write into --out
        if plan.resume is None:
            if comm.rank == 0:
                refuse_existing_run(plan.out)  # again, now that no other trainer can start one
        else:
            trainer = _prepare(plan, _read_resumed(plan), log, comm)  # under the lock: the newest checkpoint
        epochs = opts.epochs or trainer.planned_epochs or plan.cfg["TRAINING"]["N_epochs"]
        if plan.resume:
            done = finished_text(trainer, epochs, opts.max_iters, opts.out or os.path.dirname(plan.resume) or ".")
            if done:
                log(done)
                return 0
            log(f"resuming {plan.resume} at iteration {trainer.iteration} (epoch {trainer.epoch})")
        if plan.resume and trainer.planned_epochs and epochs != trainer.planned_epochs:
            log(f"note: --epochs {epochs} changes the run's planned length from {trainer.planned_epochs} "
                "epochs; schedules follow the new length from here on")
        if lock.taken_over:
            log(f"note: took over {lock.path} left by pid {lock.taken_over}, which is no longer running")
        if lock.removed:
            log(f"note: removed {len(lock.removed)} temporary file(s) left by an interrupted run")
        log(f"training KAEM on {plan.dataset}: {trainer.x_train.shape[0]} images, batch {trainer.batch}, "
            f"{trainer.iters_per_epoch} it/epoch, {epochs} epochs, objective {trainer.mode}, device "
            f"{trainer.be.device}, {sum(int(p.size) for p in trainer.model.parameters().values())} parameters "
            f"-> {plan.out}")
        with StopRequest() as stop:
            trainer.run(epochs, opts.max_iters, log_every=opts.log_every, stop=stop)
    log(f"saved {os.path.join(plan.out, 'ckpt.npz')}")
    return 0
