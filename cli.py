#!/usr/bin/env python3
"""KAEM command line: train, sample and evaluate Kolmogorov–Arnold Energy Models.

    python cli.py train  --dataset fmnist --epochs 1 --out runs/fmnist
    python cli.py sample --ckpt runs/fmnist/ckpt.npz --n 64 --out samples.png
    python cli.py eval   --ckpt runs/fmnist/ckpt.npz
    python cli.py sweep  --dataset fmnist --epochs 10      # π0 × basis, summary table
    python cli.py plot-prior --ckpt runs/fmnist/ckpt.npz --out prior.png   # learned π_{q,p}
    python cli.py jobs jobs.txt                              # command lines one after the other
    python cli.py plot-log runs/a runs/b --out curves.png    # training curves from log.csv
    python cli.py compare --ckpt runs/darcy/ckpt.npz --out compare.png    # test data vs samples
    python cli.py make-darcy --n 1100 --resolution 32 --seed 0            # data/darcy/*.npz

Every failure prints one line starting with "error:" and exits non-zero; existing
checkpoints and dataset files are never modified by a failing command.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from typing import Any, Sequence

# OpenBLAS's idle threads spin for ~2^28 cycles after each product, stealing the core that the
# numpy row blocks of kaem/threads.py run on next; sleeping at once made a thermo iteration
# 7–10% faster here. Read when numpy loads OpenBLAS, so set before the import.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402


class CLIError(RuntimeError):
    """A user-facing problem with the arguments."""


class _RaisingParser(argparse.ArgumentParser):
    """A parser whose errors raise CLIError instead of exiting (for the lines of a job file)."""

    def error(self, message: str) -> Any:
        raise CLIError(f"{self.prog}: {message}")


def _lower(text: str) -> str:
    """Dataset and preset names are case-insensitive (DATASET=FMNIST, as in the reference)."""
    return text.lower()


MAX_SAMPLE_IMAGES = 100_000  # sample --n: the PNG grid of more is unreadable anyway


def _int_in(lo: int, hi: int) -> Any:
    """An argparse type: an integer in lo..hi (plausible bounds, like the config's)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text!r}")
        return v
    return parse


def _positive_int(text: str) -> int:
    from kaem.config import MAX_COUNT

    return _int_in(1, MAX_COUNT)(text)


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

    raise CLIError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The argument parser; raise_errors: bad arguments raise CLIError instead of exiting."""
    from kaem.backend import DEVICES, DTYPES
    from kaem.config import DATASET_DEFAULTS, MAX_EVAL_SAMPLES
    from kaem.datasets import DATASETS, darcy
    from kaem.objectives import MODES

    p = (_RaisingParser if raise_errors else argparse.ArgumentParser)(
        prog="cli.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an unexpected error (or set KAEM_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{train,sample,eval,sweep,plot-prior,jobs,plot-log,compare,make-darcy}")

    def device_args(sp: argparse.ArgumentParser, seed: bool = True) -> None:
        sp.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (numpy), gpu (cupy; needs the [gpu] extra) or auto (default: cpu)")
        if seed:
            sp.add_argument("--seed", type=_int_in(0, 2 ** 63 - 1), default=0, help="random seed, >= 0 (default: 0)")

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", default="data", help="dataset cache folder (default: data)")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")

    def run_args(sp: argparse.ArgumentParser) -> None:
        """Options shared by train and sweep."""
        sp.add_argument("--set", action="append", default=[], metavar="SECTION.key=value",
                        help="override one config value (repeatable), e.g. --set EbmModel.grid_size=10")
        sp.add_argument("--epochs", type=_positive_int, help="epochs in total (default: TRAINING.N_epochs)")
        sp.add_argument("--max-iters", type=_positive_int,
                        help="stop after this many iterations in total (schedules still follow --epochs)")
        sp.add_argument("--n-train", type=_positive_int, help="training images used (default: TRAINING.N_train)")
        sp.add_argument("--n-test", type=_positive_int, help="held-out images for the per-epoch evaluation (default: TRAINING.N_test)")
        sp.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: TRAINING.batch_size)")
        sp.add_argument("--dtype", choices=DTYPES, help="float type (default: TRAINING.dtype)")
        sp.add_argument("--log-every", type=_positive_int, default=50, help="progress line every N iterations (default: 50), and at least every 30 s")
        sp.add_argument("--resize", type=_positive_int, metavar="N",
                        help="train on N×N images (the reference's img_resize, for CPU prototyping; celeba: "
                             "crop then resize, default 64; darcy: the generated resolution, default 32); "
                             "stored in the checkpoint, so eval and --resume reuse it")
        device_args(sp)
        data_args(sp)

    t = sub.add_parser("train", help="train a model (importance sampling, Langevin or thermodynamic)",
                       description="Train a KAEM by maximum likelihood with importance sampling (default), "
                                   "Langevin posterior sampling (ULA or autoMALA) or thermodynamic integration. "
                                   "Writes OUT/ckpt.npz (each epoch and at the end) and OUT/log.csv (one row per epoch). "
                                   "SIGINT/SIGTERM stop after the current iteration with a checkpoint of it (exit "
                                   "130/143); one trainer at a time may use an --out folder.")
    t.add_argument("--dataset", type=_lower, choices=DATASETS, default=None, help="dataset, any case (default: mnist, or the preset's; from the checkpoint with --resume)")
    t.add_argument("--preset", type=_lower, choices=list(DATASET_DEFAULTS), default=None,
                   help="built-in config defaults (default: the dataset's own); e.g. fmnist-fft = FFT bases, G=50")
    t.add_argument("--config", metavar="FILE", help="INI file with the reference's sections and keys")
    t.add_argument("--mode", choices=MODES,
                   help="objective, a shorthand for config keys (applied before --set; a --set that "
                        "contradicts it is an error): is = importance sampling; "
                        "ula = POST_LANGEVIN.use_langevin=true; automala = that and use_autoMALA=true; "
                        "thermo = THERMODYNAMIC_INTEGRATION.num_temps=5 unless the config sets more than 1 "
                        "(default: whatever the config selects, IS for the defaults)")
    t.add_argument("--out", metavar="DIR", help="output folder (default: runs/PRESET, or the checkpoint's folder with --resume)")
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint at its saved iteration")
    t.add_argument("--resume-existing", action="store_true",
                   help="if OUT/ckpt.npz exists, continue it (its config must be the one these options build) "
                        "instead of refusing; a finished run then does nothing (job files and make targets use this)")
    run_args(t)

    w = sub.add_parser("sweep", help="the reference's π0 × basis sweep, one run after the other",
                       description="Train one model per π0 ∈ {uniform, gaussian, lognormal, ebm} × basis ∈ "
                                   "{RBF (G=20), FFT (G=50)} into OUT/<π0>-<basis>/: writes the job file "
                                   "OUT/sweep.txt (one train line per run, with the options given here) and runs it "
                                   "as the jobs command does, summarised in OUT/sweep.summary.csv and .md (final "
                                   "held-out log-likelihood, test MSE, wall time). Rerun, finished runs are skipped "
                                   "and an interrupted one continues; a failing run is recorded and the sweep goes on.")
    w.add_argument("--dataset", type=_lower, choices=DATASETS, default="fmnist", help="dataset, any case (default: fmnist)")
    w.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/sweep-DATASET)")
    w.add_argument("--only", nargs="+", metavar="RUN", help="run only these, e.g. --only ebm-RBF gaussian-FFT")
    run_args(w)
    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    s.add_argument("--n", type=_int_in(1, MAX_SAMPLE_IMAGES), default=64,
                   help=f"number of samples, at most {MAX_SAMPLE_IMAGES} (default: 64)")
    s.add_argument("--out", default="samples.png", help="PNG path (default: samples.png)")
    s.add_argument("--npy", action="store_true", help="also write the raw array (n, C, H, W) next to the PNG as .npy")
    s.add_argument("--png-dir", metavar="DIR",
                   help="also write one PNG per sample into DIR (000000.png, ...), e.g. for FID with "
                        "torch-fidelity or clean-fid")
    device_args(s)

    e = sub.add_parser("eval", help="held-out log-likelihood and test MSE of a checkpoint")
    e.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    e.add_argument("--n-test", type=_positive_int, help="test images (default: TRAINING.N_test)")
    e.add_argument("--samples", type=_int_in(1, MAX_EVAL_SAMPLES),
                   help=f"prior samples S, at most {MAX_EVAL_SAMPLES} (default: TRAINING.eval_importance_samples)")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    device_args(e)
    data_args(e)

    pp = sub.add_parser("plot-prior", help="plot the learned prior densities π_{q,p} into a PNG",
                        description="Plot the normalised prior densities π_{q,p}(z) = exp(f_{q,p}(z)) π0(z) / Z_{q,p} "
                                    "of a checkpoint on their integration intervals, one panel per (q, p) "
                                    "(rows q, columns p, 0-based), with π0 dashed for comparison. For a mixture "
                                    "prior: one panel per q, the mixture π_q with its weighted components "
                                    "α_{q,p} π_{q,p}.")
    pp.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    pp.add_argument("--out", default="prior.png", help="PNG path (default: prior.png)")
    pp.add_argument("--q", type=int, nargs="+", metavar="Q", help="q indices, 0-based (default: the first 8)")
    pp.add_argument("--p", type=int, nargs="+", metavar="P",
                    help="p indices, 0-based (default: the first 5; mixture: every component)")
    pp.add_argument("--points", type=_int_in(2, 100_000), default=400, help="grid points per curve (default: 400)")
    pp.add_argument("--no-pi0", action="store_true", help="leave out the dashed π0 curves")
    device_args(pp, seed=False)

    j = sub.add_parser("jobs", help="run a job file: command lines one after the other, with a summary table",
                       description="Run the command lines of FILE (one per line, as after 'python cli.py'; '#' starts "
                                   "a comment; the reference's 'DATASET vanilla|thermo' lines work too) one after the "
                                   "other. A failing job is recorded and the rest go on; rerun, jobs recorded as "
                                   "finished or failed are skipped (a changed line is a new job) and an interrupted "
                                   "training continues from its last checkpoint (train lines run with "
                                   "--resume-existing). The summary (job, status, "
                                   "wall time, final held-out log-likelihood, test MSE) is rewritten after every job "
                                   "to FILE's folder (or --out) as <stem>.summary.csv and <stem>.summary.md.")
    j.add_argument("file", metavar="FILE", help="job file, e.g. jobs.txt")
    j.add_argument("--out", metavar="DIR", help="folder for the summary files (default: FILE's folder)")
    j.add_argument("--dry-run", action="store_true", help="check every line and list what would run; run nothing")
    j.add_argument("--retry-failed", action="store_true",
                   help="run again the jobs recorded as failed (by default a rerun skips them as well)")

    pl = sub.add_parser("plot-log", help="plot training curves of one or more runs into a PNG",
                        description="Plot the per-epoch log (log.csv) of one or more runs, overlaid with a legend: "
                                    "train loss, held-out log-likelihood, test MSE, and where logged the mean ESS, "
                                    "sampler acceptance rate and replica swap rate, one panel each.")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folder (holding log.csv) or a log.csv path")
    pl.add_argument("--out", default="curves.png", help="PNG path (default: curves.png)")
    pl.add_argument("--labels", nargs="+", metavar="LABEL", help="legend names, one per RUN (default: the folder names)")
    pl.add_argument("--x", choices=("epoch", "iteration", "time"), default="epoch",
                    help="x axis: epoch, iteration or training time in seconds (default: epoch)")
    pl.add_argument("--full-range", action="store_true",
                    help="y ranges include the untrained model's values (iteration 0), which otherwise lie off scale")

    c = sub.add_parser("compare", help="real test images next to generated ones, with pixel mean and std, as a PNG",
                       description="Draw the first N test images above N generated ones, and the per-pixel mean "
                                   "and standard deviation of the test set and of as many generated samples: a "
                                   "model that matches the data matches both. One-channel data (Darcy's u) are "
                                   "drawn in false colour.")
    c.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    c.add_argument("--out", default="compare.png", help="PNG path (default: compare.png)")
    c.add_argument("--n", type=_positive_int, default=8, help="images shown per row (default: 8)")
    c.add_argument("--n-test", type=_positive_int, help="test images, and generated samples, for the mean and std "
                                                        "(default: TRAINING.N_test)")
    device_args(c)
    data_args(c)

    md = sub.add_parser("make-darcy", help="generate a Darcy flow dataset (permeability a, solution u) as .npz",
                        description="Generate N Darcy flow samples at R×R interior nodes: permeability a = 12 where "
                                    "a Gaussian random field with covariance (−Δ+9I)^−2 is positive, else 3; u solves "
                                    "−∇·(a∇u) = 1, u = 0 on the boundary (5-point finite differences). Writes "
                                    "DIR/darcy/darcy_rR_nN_sS.npz atomically (float32 a and unscaled u, (N, R, R)); "
                                    "the same seed gives the same file. --dataset darcy uses (and makes on first "
                                    f"use) the default file: N={darcy.DEFAULT_N}, R={darcy.DEFAULT_RESOLUTION}, seed "
                                    f"{darcy.DEFAULT_SEED}.")
    md.add_argument("--n", type=_positive_int, default=darcy.DEFAULT_N, help=f"samples (default: {darcy.DEFAULT_N})")
    md.add_argument("--resolution", type=_positive_int, default=darcy.DEFAULT_RESOLUTION, metavar="R",
                    help=f"interior nodes per side (default: {darcy.DEFAULT_RESOLUTION})")
    md.add_argument("--seed", type=int, default=darcy.DEFAULT_SEED, help=f"random seed (default: {darcy.DEFAULT_SEED})")
    md.add_argument("--data-dir", default="data", help="dataset folder; the file goes into DIR/darcy/ (default: data)")
    return p


# ---- commands -------------------------------------------------------------------------------
def _load_data(dataset: str, args: Any, n_train: int | None, n_test: int,
               resize: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    from kaem.datasets import load_dataset

    dl = not args.no_download
    train = None if n_train is None else load_dataset(dataset, "train", args.data_dir, dl, n=n_train, resize=resize)
    return train, load_dataset(dataset, "test", args.data_dir, dl, n=n_test, resize=resize)


def cmd_train(args: Any) -> int:
    """Validate everything (config, checkpoint, data, memory) before writing into --out;
    then hold the run folder's lock while training, stopping cleanly on SIGINT/SIGTERM."""
    from kaem.backend import get_backend
    from kaem.run.checkpoint import checkpoint_config, load_checkpoint, restore_model
    from kaem.config import load_config, preset_dataset
    from kaem.datasets import dataset_info, dataset_shape
    from kaem.objectives import objective_mode
    from kaem.run.memory import check_training_memory
    from kaem.model import KAEM
    from kaem.run.lock import RunLock
    from kaem.run.signals import StopRequest
    from kaem.run.trainer import Trainer

    ckpt = None
    if args.resume:
        if args.config or args.set or args.n_train or args.batch_size or args.dtype or args.preset:
            raise CLIError("--resume continues the stored run: --config, --preset, --set, --n-train, "
                           "--batch-size and --dtype cannot change it (start a new run with --out instead)")
        ckpt = load_checkpoint(args.resume, for_resume=True)
        dataset = ckpt["meta"]["dataset"]
        if not dataset:
            raise CLIError(f"{args.resume} was saved from the Python API without a dataset name; "
                           "continue it there, or start a new run")
        if args.dataset and args.dataset != dataset:
            raise CLIError(f"--dataset {args.dataset} differs from the checkpoint's dataset {dataset}")
        cfg = checkpoint_config(ckpt)
        resize = (ckpt["meta"].get("data") or {}).get("resize")
        if args.resize and args.resize != resize:
            raise CLIError(f"--resize {args.resize} differs from the checkpoint's image size (resize {resize})")
        if args.mode and args.mode != objective_mode(cfg):
            raise CLIError(f"--mode {args.mode} differs from the checkpoint's objective {objective_mode(cfg)} "
                           "(a resumed run keeps its objective)")
        out = args.out or os.path.dirname(os.path.abspath(args.resume))
    else:
        preset = args.preset or args.dataset or "mnist"
        dataset = args.dataset or preset_dataset(preset)
        resize = args.resize
        if preset_dataset(preset) != dataset:
            raise CLIError(f"--preset {preset} is for {preset_dataset(preset)}, not --dataset {dataset}")
        overrides = list(args.set)
        for key, val in (("N_train", args.n_train), ("batch_size", args.batch_size), ("dtype", args.dtype)):
            if val is not None:
                overrides.append(f"TRAINING.{key}={val}")
        if args.mode:  # the mode's keys first, so that explicit --set values win
            num_temps = load_config(preset, args.config, overrides)["THERMODYNAMIC_INTEGRATION"]["num_temps"]
            overrides = mode_overrides(args.mode, num_temps) + overrides
        cfg = load_config(preset, args.config, overrides)
        if args.mode and objective_mode(cfg) != args.mode:
            raise CLIError(f"--mode {args.mode} conflicts with the --set/--config values, which select "
                           f"{objective_mode(cfg)}")
        out = args.out or os.path.join("runs", preset)
        existing = os.path.join(out, "ckpt.npz")
        if os.path.exists(existing):
            if not getattr(args, "resume_existing", False):
                _refuse_existing_run(out)
            ckpt = _existing_run(existing, cfg, dataset, args.seed)
            args.resume = existing
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out} exists and is not a folder")
    t = cfg["TRAINING"]
    be = get_backend(args.device, t["dtype"])
    n_test = args.n_test or t["N_test"]
    check_training_memory(cfg, dataset_shape(dataset, resize), t["N_train"], n_test, be)
    x_train, x_test = _load_data(dataset, args, t["N_train"], n_test, resize)
    info = dataset_info(dataset, args.data_dir, resize)
    if ckpt is not None:
        stored = ckpt["meta"].get("data") or {"resize": None}
        if stored != info:
            raise CLIError(f"the data differ from those the checkpoint was trained on: {info} here, {stored} stored")
        model = restore_model(ckpt, be)
        seed = int(ckpt["meta"]["seed"])
    else:
        seed = args.seed
        model = KAEM(cfg, dataset_shape(dataset, resize), be, seed=seed)
    trainer = Trainer(model, be, x_train, x_test, out, seed=seed, dataset=dataset, data_info=info)
    epochs = args.epochs or t["N_epochs"]
    if ckpt is not None:
        trainer.restore(ckpt)
        epochs = args.epochs or trainer.planned_epochs or epochs
    args.result = {"run_dir": out}  # for a job file's summary
    with RunLock(out) as lock:  # the first write into --out
        if ckpt is None:
            _refuse_existing_run(out)  # again, now that no other trainer can start one
        else:
            print(f"resuming {args.resume} at iteration {trainer.iteration} (epoch {trainer.epoch})", file=sys.stderr)
            if trainer.planned_epochs and epochs != trainer.planned_epochs:
                print(f"note: --epochs {epochs} changes the run's planned length from {trainer.planned_epochs} "
                      "epochs; schedules follow the new length from here on", file=sys.stderr)
        if lock.taken_over:
            print(f"note: took over {lock.path} left by pid {lock.taken_over}, which is no longer running",
                  file=sys.stderr)
        if lock.removed:
            print(f"note: removed {len(lock.removed)} temporary file(s) left by an interrupted run", file=sys.stderr)
        print(f"training KAEM on {dataset}: {x_train.shape[0]} images, batch {trainer.batch}, "
              f"{trainer.iters_per_epoch} it/epoch, {epochs} epochs, objective {trainer.mode}, device {be.device}, "
              f"{sum(int(p.size) for p in model.parameters().values())} parameters -> {out}", file=sys.stderr)
        with StopRequest() as stop:
            trainer.run(epochs, args.max_iters, log_every=args.log_every, stop=stop)
    print(f"saved {os.path.join(out, 'ckpt.npz')}", file=sys.stderr)
    return 0


def _existing_run(path: str, cfg: Any, dataset: str, seed: int) -> dict[str, Any]:
    """The checkpoint at ``path`` if it continues the run these options describe (same
    dataset, seed and config); otherwise a CLIError naming what differs."""
    from kaem.run.checkpoint import checkpoint_config, load_checkpoint
    from kaem.config import config_diff

    ckpt = load_checkpoint(path, for_resume=True)
    meta = ckpt["meta"]
    diff = config_diff(checkpoint_config(ckpt), cfg)
    if meta.get("dataset") != dataset:
        diff.insert(0, f"dataset: {meta.get('dataset')} stored, {dataset} asked")
    if int(meta.get("seed", 0)) != seed:
        diff.insert(0, f"seed: {meta.get('seed')} stored, {seed} asked")
    if diff:
        raise CLIError(f"{path} is a different run ({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}); "
                       f"continue it with --resume {path}, or choose another --out")
    return ckpt


def _refuse_existing_run(out: str) -> None:
    existing = os.path.join(out, "ckpt.npz")
    if os.path.exists(existing):
        raise CLIError(f"{existing} already exists; continue it with --resume {existing} "
                       "(or --resume-existing) or choose another --out")


def cmd_sample(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.run.checkpoint import load_checkpoint, restore_model
    from kaem.run.atomic import atomic_open
    from kaem.plots import NonFiniteImages, save_pngs, save_sample_grid

    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    try:
        x = save_sample_grid(args.out, model, args.n, be.rng(args.seed), require_finite=True)
    except NonFiniteImages as e:
        raise CLIError(f"the model in {args.ckpt} has diverged: {e}; nothing written") from None
    args.result = {"output": args.out}
    print(f"wrote {args.out} ({args.n} samples)")
    if args.png_dir:
        save_pngs(args.png_dir, x)
        print(f"wrote {args.n} PNGs to {args.png_dir}/ (000000.png, ...)")
    if args.npy:
        npy = args.out[:-4] + ".npy"
        with atomic_open(npy, "wb", suffix=".npy") as fh:
            np.save(fh, x)
        print(f"wrote {npy} {x.shape}")
    return 0


def cmd_eval(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.run.checkpoint import load_checkpoint, restore_model
    from kaem.evaluation.heldout import evaluate

    ckpt = load_checkpoint(args.ckpt, with_data=True)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    t = model.cfg["TRAINING"]
    if not ckpt["meta"]["dataset"]:
        raise CLIError(f"{args.ckpt} names no dataset (saved from the Python API), so there is no test set to "
                       "evaluate on; use kaem.evaluation.heldout.evaluate with your data")
    resize = (ckpt["meta"].get("data") or {}).get("resize")
    _, x_test = _load_data(ckpt["meta"]["dataset"], args, None, args.n_test or t["N_test"], resize)
    S = args.samples or t["eval_importance_samples"]
    res = evaluate(model, be.asarray(x_test.reshape(x_test.shape[0], -1)), S, be.rng(args.seed))
    res.update(n_test=int(x_test.shape[0]), iteration=int(ckpt["meta"]["iteration"]))
    bad = [k for k in ("loglik_nats", "test_mse") if not np.isfinite(res[k])]
    if bad:
        raise CLIError(f"the model in {args.ckpt} gives a non-finite {' and '.join(bad)} "
                       f"({', '.join(f'{k} = {res[k]}' for k in bad)}): it has diverged")
    args.result = {**res, "output": args.ckpt}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"checkpoint {args.ckpt} (iteration {res['iteration']}), {res['n_test']} test images")
        print(f"held-out log-likelihood: {res['loglik_nats']:.3f} nats/image, {res['bits_per_dim']:.5f} bits/dim "
              f"(S = {S} prior samples, σ = {res['sigma']})")
        print(f"test MSE (generated vs test images): {res['test_mse']:.5f}")
        if model.prior.has_exact_logZ:
            print(f"prior quadrature check: max |Δ log Z| when the Gauss–Legendre nodes double = {res['logZ_quad_err']:.2e}"
                  + ("  (large: raise EbmModel.GaussQuad_nodes)" if res["logZ_quad_err"] > 1e-3 else ""))
        else:  # the deep prior: the line above used prior-Langevin draws
            print(f"deep prior, importance sampling from π0: held-out log-likelihood {res['loglik_is_pi0_nats']:.3f} "
                  f"nats/image with log Z = {res['logZ_is']:.4f} ± {res['logZ_is_se']:.4f} (standard error; ESS "
                  f"{res['logZ_is_ess']:.0f} of {res['logZ_is_n']} draws; unreliable when the ESS is small)")
    return 0


def _option_words(args: Any, command: str, skip: Sequence[str]) -> list[str]:
    """The options of a parsed ``command``, except those in ``skip``, back as command-line
    words: those that differ from their defaults only (a generated line reads like a typed one)."""
    sp = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    words: list[str] = []
    for action in sp._actions:
        value = getattr(args, action.dest, None)
        if action.dest in skip or not action.option_strings or value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            words += [w for v in value for w in (flag, str(v))]
        else:
            words += [flag, str(value)]
    return words


SWEEP_OWN = ("help", "dataset", "out", "only")  # the sweep's options that do not go into its train lines


def cmd_sweep(args: Any) -> int:
    """The sweep is a generated job file, OUT/sweep.txt, run by the jobs machinery."""
    from kaem.run.jobs import write_job_file
    from kaem.run.sweep import sweep_plan

    out = args.out or os.path.join("runs", f"sweep-{args.dataset}")
    plan = sweep_plan(args.dataset)
    names = [p["run"] for p in plan]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise CLIError(f"--only: unknown run(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        plan = [p for p in plan if p["run"] in args.only]
    common = _option_words(args, "sweep", SWEEP_OWN)
    lines = [["train", "--dataset", args.dataset, "--preset", p["preset"],
              *[w for o in p["overrides"] for w in ("--set", o)], "--out", os.path.join(out, p["run"]), *common]
             for p in plan]
    job_file = os.path.join(out, "sweep.txt")
    write_job_file(job_file, lines, f"generated by 'cli.py sweep' ({len(lines)} runs); it rewrites this file.\n"
                                    "To change the plan, edit a copy and run it with 'cli.py jobs COPY'.")
    print(f"wrote {job_file} ({len(lines)} train lines)", file=sys.stderr)
    return _run_job_file(job_file, out)


def _parse_job(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """A job-file line's words parsed as a command: (args, "") or (None, why it cannot run)."""
    try:
        args = build_parser(raise_errors=True).parse_args(argv)
    except CLIError as e:
        return None, str(e)
    except SystemExit:  # --help and the like print and exit
        return None, "the line asks for help instead of running a command"
    return (None, "a job file cannot run another job file") if args.command == "jobs" else (args, "")


def _check_job(argv: list[str]) -> str:
    return _parse_job(argv)[1]


def run_job(argv: list[str]) -> tuple[int, str, dict[str, Any]]:
    """Run one job-file line in this process: (exit status, error message, result for the
    summary). A train line that does not name --resume runs with --resume-existing, so that
    rerunning the file continues an interrupted training and skips over a finished one."""
    args, problem = _parse_job(argv)
    if args is None:
        print(f"error: {problem}", file=sys.stderr)
        return 2, problem, {}
    if args.command == "train" and not args.resume:
        args.resume_existing = True
    status = main(args)
    return status, getattr(args, "error", ""), getattr(args, "result", {})


def _run_job_file(path: str, out: str | None, dry_run: bool = False, retry_failed: bool = False) -> int:
    from kaem.run.jobs import plan_text, read_job_file, read_record, run_jobs, summary_paths

    jobs = read_job_file(path, _check_job)
    csv_path, md_path = summary_paths(path, out)
    if dry_run:
        print(plan_text(jobs, read_record(csv_path), retry_failed), end="")
        return 0 if not any(j.error for j in jobs) else 2
    done = run_jobs(jobs, run_job, csv_path, md_path, log=lambda m: print(m, file=sys.stderr, flush=True),
                    retry_failed=retry_failed)
    with open(md_path, encoding="utf-8") as fh:
        print(fh.read(), end="")
    print(f"summary: {md_path} and {csv_path}")
    return done.status


def cmd_jobs(args: Any) -> int:
    return _run_job_file(args.file, args.out, args.dry_run, args.retry_failed)


def cmd_plot_log(args: Any) -> int:
    from kaem.plots import save_image, training_curves
    from kaem.run.logfile import LogError, log_path, read_log

    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    if args.labels and len(args.labels) != len(args.runs):
        raise CLIError(f"--labels gives {len(args.labels)} name(s) for {len(args.runs)} run(s); give one per RUN")
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(log_path(r)))) for r in args.runs]
    if not args.labels and len(set(labels)) < len(labels):  # same folder names: tell them apart by path
        labels = list(args.runs)
    try:
        runs = [(label, read_log(r)) for label, r in zip(labels, args.runs)]
    except LogError as e:
        raise CLIError(str(e)) from None
    img, _ = training_curves(runs, x=args.x, full_range=args.full_range)
    save_image(args.out, img)
    args.result = {"output": args.out}
    print(f"wrote {args.out} ({img.size[0]}x{img.size[1]} px, {len(runs)} run(s))")
    return 0


def cmd_plot_prior(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.run.checkpoint import load_checkpoint, restore_model
    from kaem.plots import prior_figure, save_image

    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    if args.points < 2:
        raise CLIError(f"--points must be at least 2, got {args.points}")
    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    prior = model.prior
    if not prior.has_exact_logZ:
        raise CLIError(f"{args.ckpt} has the deep prior (one energy over z ∈ R^{prior.Q}): it has no univariate "
                       "densities π_{q,p} to plot")
    for flag, idx, size in (("--q", args.q, prior.Q), ("--p", args.p, prior.P)):
        bad = [i for i in idx or [] if not 0 <= i < size]
        if bad:
            raise CLIError(f"{flag} {bad[0]} is out of range: this checkpoint has {flag[2:].upper()} = {size}, "
                           f"valid {flag} values are 0..{size - 1}")
    source = f"{args.ckpt}, iteration {int(ckpt['meta']['iteration'])}"
    try:
        img = prior_figure(prior, args.q, args.p, n_points=args.points, show_pi0=not args.no_pi0, source=source)
    except ValueError as e:  # a prior kind without a density figure
        raise CLIError(str(e)) from None
    save_image(args.out, img)
    args.result = {"output": args.out}
    print(f"wrote {args.out} ({img.size[0]}x{img.size[1]} px)")
    return 0


def cmd_compare(args: Any) -> int:
    from kaem.backend import get_backend, to_numpy
    from kaem.run.checkpoint import load_checkpoint, restore_model
    from kaem.plots import real_vs_generated, save_image

    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    resize = (ckpt["meta"].get("data") or {}).get("resize")
    dataset = ckpt["meta"]["dataset"]
    _, x_test = _load_data(dataset, args, None, args.n_test or model.cfg["TRAINING"]["N_test"], resize)
    n = x_test.shape[0]
    gen = to_numpy(model.generate(n, be.rng(args.seed))).reshape((n,) + model.data_shape)
    title = f"{dataset}: real (test) vs generated, {os.path.basename(args.ckpt)} at iteration {int(ckpt['meta']['iteration'])}"
    save_image(args.out, real_vs_generated(x_test, gen, args.n, title))
    print(f"wrote {args.out} ({n} test images, {n} samples)")
    return 0


def cmd_make_darcy(args: Any) -> int:
    from kaem.datasets.darcy import make_darcy

    if args.resolution < 2:
        raise CLIError(f"--resolution must be at least 2, got {args.resolution}")
    path = make_darcy(args.n, args.resolution, args.seed, args.data_dir)
    print(f"{path}: {args.n} samples, a and u of shape ({args.n}, {args.resolution}, {args.resolution})")
    return 0


def _warning_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Warnings as one "warning:" line, without the source location."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _one_line(message: str) -> str:
    """A multi-line message (an INI parser's, say) joined into one line."""
    return " | ".join(part.strip() for part in message.splitlines() if part.strip())


def _run(command: Any, args: Any) -> int:
    """Run one command; every failure becomes one "error:" line (also left as ``args.error``
    for a job file's summary) and a non-zero exit status."""
    from kaem.backend import BackendError
    from kaem.run.checkpoint import CheckpointError
    from kaem.config import ConfigError
    from kaem.datasets import DatasetError
    from kaem.run.jobs import JobFileError
    from kaem.run.lock import RunLockError
    from kaem.run.signals import Abandon, Interrupted, signal_name
    from kaem.run.trainer import TrainingError

    def fail(message: str, status: int) -> int:
        args.error = _one_line(message)
        print(f"error: {args.error}", file=sys.stderr)
        return status

    try:
        return command(args)
    except (CLIError, ConfigError, DatasetError, CheckpointError, BackendError, TrainingError, JobFileError,
            RunLockError) as e:
        return fail(str(e), 2 if isinstance(e, (CLIError, ConfigError)) else 1)
    except Interrupted as e:  # checkpointed: not an error
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # unwritable --out, full disk, ...: say so, without a traceback
        return fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e), 1)
    except MemoryError:
        return fail("out of memory; lower TRAINING.batch_size, TRAINING.importance_sample_size or the model's "
                    "widths / grid sizes (or free memory), and rerun", 1)
    except (KeyboardInterrupt, Abandon) as e:
        signum = e.args[0] if isinstance(e, Abandon) else signal.SIGINT
        print(f"stopped: {signal_name(signum)}; files are written atomically, so existing ones are intact",
              file=sys.stderr)
        return 128 + signum
    except Exception as e:  # a bug: one line, the traceback only on request
        if getattr(args, "debug", False) or os.environ.get("KAEM_DEBUG"):
            raise
        return fail(f"internal error {type(e).__name__}: {e} (please report this with the command line; "
                    "rerun with --debug or KAEM_DEBUG=1 for the traceback)", 1)


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Run one command: argv holds the words after cli.py (default: sys.argv[1:]) or is an
    already parsed Namespace (a job file's line), on which an error's message is left as
    ``args.error``. Returns the exit status."""
    from kaem.run.signals import Abandon

    args = argv if isinstance(argv, argparse.Namespace) else build_parser().parse_args(argv)
    commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "sweep": cmd_sweep,
                "plot-prior": cmd_plot_prior, "jobs": cmd_jobs, "plot-log": cmd_plot_log,
                "compare": cmd_compare, "make-darcy": cmd_make_darcy}

    def terminate(signum: int, frame: Any) -> None:  # outside training's own handler
        raise Abandon(signum)

    try:
        old_term = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        old_term = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return _run(commands[args.command], args)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
