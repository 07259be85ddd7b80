#!/usr/bin/env python3
"""KAEM command line: train, sample and evaluate Kolmogorov–Arnold Energy Models.

    python cli.py train  --dataset fmnist --epochs 1 --out runs/fmnist
    python cli.py sample --ckpt runs/fmnist/ckpt.npz --n 64 --out samples.png
    python cli.py eval   --ckpt runs/fmnist/ckpt.npz --n-test 100    # AIS; --estimator is: quick
    python cli.py sweep  --dataset fmnist --epochs 10      # π0 × basis, summary table
    python cli.py plot-prior --ckpt runs/fmnist/ckpt.npz --out prior.png   # learned π_{q,p}
    python cli.py jobs jobs.txt                              # command lines one after the other
    python cli.py plot-log runs/a runs/b --out curves.png    # training curves from log.csv
    python cli.py compare --ckpt runs/darcy/ckpt.npz --out compare.png    # test data vs samples
    python cli.py make-darcy --n 1100 --resolution 32 --seed 0            # data/darcy/*.npz

Every failure prints one line starting with "error:" and exits non-zero; existing
checkpoints and dataset files are never modified by a failing command.

This file parses and dispatches; the commands live in kaem/run/ (session: train, sampling: sample
and compare, scoring: eval, plotting, jobs, sweep; failures: error lines), open to the Python API.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

# OpenBLAS's idle threads spin ~2^28 cycles after each product, stealing the core kaem/kernels/threads.py's
# row blocks run on next; sleeping at once made a thermo iteration 7–10% faster. Read when numpy loads it.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from kaem.run.arguments import (OneLineParser, RaisingParser, int_in, lower, option_words,  # noqa: E402
                                positive_int, subparser)
from kaem.run.data import data_options, make_darcy_file  # noqa: E402
from kaem.run.failures import run_command  # noqa: E402
from kaem.run.jobs import parse_line, run_job_file  # noqa: E402
from kaem.run.plotting import plot_log, plot_prior  # noqa: E402
from kaem.run.sampling import compare_checkpoint, sample_checkpoint  # noqa: E402
from kaem.run.scoring import (EVAL_DESCRIPTION, eval_arguments, eval_options, evaluate_checkpoint,  # noqa: E402
                              evaluation_lines, json_text)
from kaem.run.session import TrainOptions, mode_overrides, plan_training, run_training  # noqa: E402,F401
from kaem.run.sweep import write_sweep  # noqa: E402

MAX_SAMPLE_IMAGES = 100_000  # sample --n: the PNG grid of more is unreadable anyway
SWEEP_OWN = ("help", "dataset", "out", "only")  # the sweep's options that do not go into its train lines


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The argument parser; raise_errors: bad arguments raise CommandError instead of exiting."""
    from kaem.backend import DEVICES, DTYPES
    from kaem.config import DATASET_DEFAULTS
    from kaem.datasets import DATASETS, darcy
    from kaem.objectives import MODES

    p = (RaisingParser if raise_errors else OneLineParser)(
        prog="cli.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an unexpected error (or set KAEM_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{train,sample,eval,sweep,plot-prior,jobs,plot-log,compare,make-darcy}")

    def device_args(sp: argparse.ArgumentParser, seed: bool = True) -> None:
        sp.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (numpy), gpu (cupy; needs the [gpu] extra) or auto (default: cpu)")
        if seed:
            sp.add_argument("--seed", type=int_in(0, 2 ** 63 - 1), default=0, help="random seed, >= 0 (default: 0)")

    def data_args(sp: argparse.ArgumentParser, stored: str = "resuming: the checkpoint's, else data") -> None:
        sp.add_argument("--data-dir", help=f"dataset cache folder (default: {stored})")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")

    def run_args(sp: argparse.ArgumentParser) -> None:
        """Options shared by train and sweep."""
        sp.add_argument("--set", action="append", default=[], metavar="SECTION.key=value",
                        help="override one config value (repeatable), e.g. --set EbmModel.grid_size=10")
        sp.add_argument("--epochs", type=positive_int, help="epochs in total (default: TRAINING.N_epochs)")
        sp.add_argument("--max-iters", type=positive_int,
                        help="stop after this many iterations in total (schedules still follow --epochs)")
        sp.add_argument("--n-train", type=positive_int, help="training images used (default: TRAINING.N_train)")
        sp.add_argument("--n-test", type=positive_int, help="held-out images for the per-epoch evaluation (default: "
                                                            "TRAINING.N_test; resuming: the checkpoint's)")
        sp.add_argument("--batch-size", type=positive_int, help="minibatch size (default: TRAINING.batch_size)")
        sp.add_argument("--dtype", choices=DTYPES, help="float type (default: TRAINING.dtype)")
        sp.add_argument("--log-every", type=positive_int, default=50, help="progress line every N iterations (default: 50), and at least every 30 s")
        sp.add_argument("--resize", type=positive_int, metavar="N",
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
    t.add_argument("--dataset", type=lower, choices=DATASETS, default=None, help="dataset, any case (default: mnist, or the preset's; from the checkpoint with --resume)")
    t.add_argument("--preset", type=lower, choices=list(DATASET_DEFAULTS), default=None,
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
    t.add_argument("--parallel", choices=("data", "temperatures"), default="data",
                   help="under mpiexec -n R: split each minibatch's data over the ranks (any objective), or the "
                        "temperatures of thermodynamic integration (default: data)")
    run_args(t)

    w = sub.add_parser("sweep", help="the reference's π0 × basis sweep, one run after the other",
                       description="Train one model per π0 ∈ {uniform, gaussian, lognormal, ebm} × basis ∈ "
                                   "{RBF (G=20), FFT (G=50)} into OUT/<π0>-<basis>/: writes the job file "
                                   "OUT/sweep.txt (one train line per run, with the options given here) and runs it "
                                   "as the jobs command does, summarised in OUT/sweep.summary.csv and .md (final "
                                   "held-out log-likelihood, test MSE, wall time). Rerun, finished runs are skipped "
                                   "and an interrupted one continues; a failing run is recorded and the sweep goes on.")
    w.add_argument("--dataset", type=lower, choices=DATASETS, default="fmnist", help="dataset, any case (default: fmnist)")
    w.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/sweep-DATASET)")
    w.add_argument("--only", nargs="+", metavar="RUN", help="run only these, e.g. --only ebm-RBF gaussian-FFT")
    run_args(w)
    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    s.add_argument("--n", type=int_in(1, MAX_SAMPLE_IMAGES), default=64,
                   help=f"number of samples, at most {MAX_SAMPLE_IMAGES} (default: 64)")
    s.add_argument("--out", default="samples.png", help="PNG path (default: samples.png)")
    s.add_argument("--npy", action="store_true", help="also write the raw array (n, C, H, W) next to the PNG as .npy")
    s.add_argument("--png-dir", metavar="DIR", help="also write one PNG per sample into DIR (000000.png, ...), "
                                                    "e.g. for FID with torch-fidelity or clean-fid")
    device_args(s)

    e = sub.add_parser("eval", help="held-out log-likelihood (AIS or IS) and test MSE of a checkpoint",
                       description=EVAL_DESCRIPTION)
    e.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    eval_arguments(e)  # --estimator, --samples, --temps, --chains, --bdmc, --n-test, --json
    device_args(e)
    data_args(e, "the checkpoint's, else data")

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
    pp.add_argument("--points", type=int_in(2, 100_000), default=400, help="grid points per curve (default: 400)")
    pp.add_argument("--no-pi0", action="store_true", help="leave out the dashed π0 curves")
    device_args(pp, seed=False)

    j = sub.add_parser("jobs", help="run a job file: command lines one after the other, with a summary table",
                       description="Run the command lines of FILE (one per line, as after 'python cli.py'; '#' starts "
                                   "a comment; the reference's 'DATASET vanilla|thermo' lines work too) one after the "
                                   "other. A failing job is recorded and the rest go on; rerun, jobs recorded as "
                                   "finished or failed are skipped (a changed line is a new job) and an interrupted "
                                   "training continues from its last checkpoint (train lines run with --resume-existing). "
                                   "The summary (job, status, wall time, final held-out log-likelihood, test MSE) is "
                                   "rewritten after every job to FILE's folder (or --out) as <stem>.summary.csv and "
                                   "<stem>.summary.md.")
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
    c.add_argument("--n", type=positive_int, default=8, help="images shown per row (default: 8)")
    c.add_argument("--n-test", type=positive_int, help="test images, and generated samples, for the mean and std "
                                                       "(default: the checkpoint's, else TRAINING.N_test)")
    device_args(c)
    data_args(c, "the checkpoint's, else data")

    md = sub.add_parser("make-darcy", help="generate a Darcy flow dataset (permeability a, solution u) as .npz",
                        description="Generate N Darcy flow samples at R×R interior nodes: permeability a = 12 where "
                                    "a Gaussian random field with covariance (−Δ+9I)^−2 is positive, else 3; u solves "
                                    "−∇·(a∇u) = 1, u = 0 on the boundary (5-point finite differences). Writes "
                                    "DIR/darcy/darcy_rR_nN_sS.npz atomically (float32 a and unscaled u, (N, R, R)); "
                                    "the same seed gives the same file. --dataset darcy uses (and makes on first "
                                    f"use) the default file: N={darcy.DEFAULT_N}, R={darcy.DEFAULT_RESOLUTION}, seed "
                                    f"{darcy.DEFAULT_SEED}.")
    md.add_argument("--n", type=positive_int, default=darcy.DEFAULT_N, help=f"samples (default: {darcy.DEFAULT_N})")
    md.add_argument("--resolution", type=positive_int, default=darcy.DEFAULT_RESOLUTION, metavar="R",
                    help=f"interior nodes per side (default: {darcy.DEFAULT_RESOLUTION})")
    md.add_argument("--seed", type=int, default=darcy.DEFAULT_SEED, help=f"random seed (default: {darcy.DEFAULT_SEED})")
    md.add_argument("--data-dir", default="data", help="dataset folder; the file goes into DIR/darcy/ (default: data)")
    return p


# ---- commands: each turns its parsed options into a call of the package ---------------------
def cmd_train(args: argparse.Namespace) -> int:
    plan = plan_training(TrainOptions.from_args(args))
    args.result = {"run_dir": plan.out}  # for a job file's summary, also when interrupted
    return run_training(plan)


def cmd_sample(args: argparse.Namespace) -> int:
    args.result = sample_checkpoint(args.ckpt, args.n, args.out, npy=args.npy, png_dir=args.png_dir,
                                    device=args.device, seed=args.seed)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    ev = evaluate_checkpoint(args.ckpt, n_test=args.n_test, seed=args.seed, device=args.device,
                             say=lambda m: print(m, file=sys.stderr), **eval_options(args), **data_options(args))
    args.result = {**ev.result, "output": args.ckpt}
    print(json_text(ev, args.per_image) if args.json else "\n".join(evaluation_lines(args.ckpt, ev)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    args.result = compare_checkpoint(args.ckpt, args.out, n=args.n, n_test=args.n_test, device=args.device,
                                     seed=args.seed, **data_options(args))
    return 0


def cmd_plot_prior(args: argparse.Namespace) -> int:
    args.result = plot_prior(args.ckpt, args.out, q=args.q, p=args.p, points=args.points, no_pi0=args.no_pi0,
                             device=args.device)
    return 0


def cmd_plot_log(args: argparse.Namespace) -> int:
    args.result = plot_log(args.runs, args.out, labels=args.labels, x=args.x, full_range=args.full_range)
    return 0


def cmd_make_darcy(args: argparse.Namespace) -> int:
    args.result = make_darcy_file(args.n, args.resolution, args.seed, args.data_dir)
    return 0


def _parse_line(argv: list[str]) -> argparse.Namespace:
    """A job-file line's words as a command; a bad line raises CommandError."""
    return build_parser(raise_errors=True).parse_args(argv)


def _check_job(argv: list[str]) -> str:
    """Why a job-file line cannot run ("" if it can)."""
    return parse_line(argv, _parse_line)[1]


def cmd_jobs(args: argparse.Namespace) -> int:
    return run_job_file(args.file, args.out, _parse_line, main, dry_run=args.dry_run, retry_failed=args.retry_failed)


def _option_words(args: argparse.Namespace, command: str, skip: Sequence[str]) -> list[str]:
    """The options of a parsed ``command`` that differ from their defaults, as words."""
    return option_words(subparser(build_parser(), command), args, skip)


def cmd_sweep(args: argparse.Namespace) -> int:
    """The sweep is a generated job file, OUT/sweep.txt, run by the jobs machinery."""
    out = args.out or os.path.join("runs", f"sweep-{args.dataset}")
    job_file, n_lines = write_sweep(args.dataset, out, args.only, _option_words(args, "sweep", SWEEP_OWN))
    print(f"wrote {job_file} ({n_lines} train lines)", file=sys.stderr)
    return run_job_file(job_file, out, _parse_line, main)


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Run one command: argv holds the words after cli.py (default: sys.argv[1:]) or is an
    already parsed Namespace (a job file's line), on which an error's message is left as
    ``args.error``. Returns the exit status."""
    args = argv if isinstance(argv, argparse.Namespace) else build_parser().parse_args(argv)
    return run_command(globals()["cmd_" + args.command.replace("-", "_")], args)  # looked up now: tests patch


if __name__ == "__main__":
    sys.exit(main())
