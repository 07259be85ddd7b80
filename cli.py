#!/usr/bin/env python3
"""KAEM command line: train, sample and evaluate Kolmogorov–Arnold Energy Models.

    python cli.py train  --dataset fmnist --epochs 1 --out runs/fmnist
    python cli.py sample --ckpt runs/fmnist/ckpt.npz --n 64 --out samples.png
    python cli.py eval   --ckpt runs/fmnist/ckpt.npz
    python cli.py sweep  --dataset fmnist --epochs 10      # π0 × basis, summary table
    python cli.py plot-prior --ckpt runs/fmnist/ckpt.npz --out prior.png   # learned π_{q,p}

Every failure prints one line starting with "error:" and exits non-zero; existing
checkpoints and dataset files are never modified by a failing command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np


class CLIError(RuntimeError):
    """A user-facing problem with the arguments."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


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
        return [f"{ti}=5"] if num_temps == 1 else []
    from kaem.langevin import MODES

    raise CLIError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")


def build_parser() -> argparse.ArgumentParser:
    from kaem.backend import DEVICES, DTYPES
    from kaem.config import DATASET_DEFAULTS
    from kaem.datasets import DATASETS
    from kaem.langevin import MODES

    p = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,sample,eval,sweep,plot-prior}")

    def device_args(sp: argparse.ArgumentParser, seed: bool = True) -> None:
        sp.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (numpy), gpu (cupy; needs the [gpu] extra) or auto (default: cpu)")
        if seed:
            sp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", default="data", help="dataset cache folder (default: data)")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")

    def run_args(sp: argparse.ArgumentParser) -> None:
        """Options shared by train and sweep."""
        sp.add_argument("--set", action="append", default=[], metavar="SECTION.key=value",
                        help="override one config value (repeatable), e.g. --set EbmModel.grid_size=10")
        sp.add_argument("--epochs", type=_positive_int, help="epochs in total (default: TRAINING.N_epochs)")
        sp.add_argument("--max-iters", type=_positive_int, help="stop after this many iterations in total")
        sp.add_argument("--n-train", type=_positive_int, help="training images used (default: TRAINING.N_train)")
        sp.add_argument("--n-test", type=_positive_int, help="held-out images for the per-epoch evaluation (default: TRAINING.N_test)")
        sp.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: TRAINING.batch_size)")
        sp.add_argument("--dtype", choices=DTYPES, help="float type (default: TRAINING.dtype)")
        sp.add_argument("--log-every", type=_positive_int, default=50, help="progress line every N iterations (default: 50)")
        device_args(sp)
        data_args(sp)

    t = sub.add_parser("train", help="train a model (importance sampling, Langevin or thermodynamic)",
                       description="Train a KAEM by maximum likelihood with importance sampling (default), "
                                   "Langevin posterior sampling (ULA or autoMALA) or thermodynamic integration. "
                                   "Writes OUT/ckpt.npz (each epoch and at the end) and OUT/log.csv (one row per epoch).")
    t.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: mnist, or the preset's; from the checkpoint with --resume)")
    t.add_argument("--preset", choices=list(DATASET_DEFAULTS), default=None,
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
    run_args(t)

    w = sub.add_parser("sweep", help="the reference's π0 × basis sweep, one run after the other",
                       description="Train one model per π0 ∈ {uniform, gaussian, lognormal, ebm} × basis ∈ "
                                   "{RBF (G=20), FFT (G=50)} into OUT/<π0>-<basis>/, then write OUT/summary.csv "
                                   "and OUT/summary.md (final held-out log-likelihood, test MSE, wall time). "
                                   "Runs whose checkpoint exists are resumed (a finished one is not retrained); "
                                   "a failing run is recorded and the sweep goes on.")
    w.add_argument("--dataset", choices=DATASETS, default="fmnist", help="dataset (default: fmnist)")
    w.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/sweep-DATASET)")
    w.add_argument("--only", nargs="+", metavar="RUN", help="run only these, e.g. --only ebm-RBF gaussian-FFT")
    run_args(w)
    s = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    s.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    s.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    s.add_argument("--out", default="samples.png", help="PNG path (default: samples.png)")
    s.add_argument("--npy", action="store_true", help="also write the raw array (n, C, H, W) next to the PNG as .npy")
    device_args(s)

    e = sub.add_parser("eval", help="held-out log-likelihood and test MSE of a checkpoint")
    e.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    e.add_argument("--n-test", type=_positive_int, help="test images (default: TRAINING.N_test)")
    e.add_argument("--samples", type=_positive_int, help="prior samples S (default: TRAINING.eval_importance_samples)")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    device_args(e)
    data_args(e)

    pp = sub.add_parser("plot-prior", help="plot the learned prior densities π_{q,p} into a PNG",
                        description="Plot the normalised prior densities π_{q,p}(z) = exp(f_{q,p}(z)) π0(z) / Z_{q,p} "
                                    "of a checkpoint on their integration intervals, one panel per (q, p) "
                                    "(rows q, columns p, 0-based), with π0 dashed for comparison.")
    pp.add_argument("--ckpt", required=True, help="checkpoint (.npz) written by train")
    pp.add_argument("--out", default="prior.png", help="PNG path (default: prior.png)")
    pp.add_argument("--q", type=int, nargs="+", metavar="Q", help="q indices, 0-based (default: the first 8)")
    pp.add_argument("--p", type=int, nargs="+", metavar="P", help="p indices, 0-based (default: the first 5)")
    pp.add_argument("--points", type=_positive_int, default=400, help="grid points per curve (default: 400)")
    pp.add_argument("--no-pi0", action="store_true", help="leave out the dashed π0 curves")
    device_args(pp, seed=False)
    return p


# ---- commands -------------------------------------------------------------------------------
def _load_data(dataset: str, args: Any, n_train: int | None, n_test: int) -> tuple[np.ndarray | None, np.ndarray]:
    from kaem.datasets import load_dataset

    dl = not args.no_download
    train = None if n_train is None else load_dataset(dataset, "train", args.data_dir, dl, n=n_train)
    return train, load_dataset(dataset, "test", args.data_dir, dl, n=n_test)


def cmd_train(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.checkpoint import load_checkpoint, restore_model
    from kaem.config import config_from_ini, load_config, preset_dataset
    from kaem.datasets import dataset_shape
    from kaem.langevin import objective_mode
    from kaem.model import KAEM
    from kaem.train import Trainer

    ckpt = None
    if args.resume:
        if args.config or args.set or args.n_train or args.batch_size or args.dtype or args.preset:
            raise CLIError("--resume continues the stored run: --config, --preset, --set, --n-train, "
                           "--batch-size and --dtype cannot change it (start a new run with --out instead)")
        ckpt = load_checkpoint(args.resume)
        dataset = ckpt["meta"]["dataset"]
        if args.dataset and args.dataset != dataset:
            raise CLIError(f"--dataset {args.dataset} differs from the checkpoint's dataset {dataset}")
        cfg = config_from_ini(ckpt["config"])
        if args.mode and args.mode != objective_mode(cfg):
            raise CLIError(f"--mode {args.mode} differs from the checkpoint's objective {objective_mode(cfg)} "
                           "(a resumed run keeps its objective)")
        out = args.out or os.path.dirname(os.path.abspath(args.resume))
    else:
        preset = args.preset or args.dataset or "mnist"
        dataset = args.dataset or preset_dataset(preset)
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
        if os.path.exists(os.path.join(out, "ckpt.npz")):
            raise CLIError(f"{os.path.join(out, 'ckpt.npz')} already exists; continue it with "
                           f"--resume {os.path.join(out, 'ckpt.npz')} or choose another --out")
    t = cfg["TRAINING"]
    be = get_backend(args.device, t["dtype"])
    x_train, x_test = _load_data(dataset, args, t["N_train"], args.n_test or t["N_test"])
    if ckpt is not None:
        model = restore_model(ckpt, be)
        seed = int(ckpt["meta"]["seed"])
    else:
        seed = args.seed
        model = KAEM(cfg, dataset_shape(dataset), be, seed=seed)
    trainer = Trainer(model, be, x_train, x_test, out, seed=seed, dataset=dataset)
    if ckpt is not None:
        trainer.restore(ckpt)
        print(f"resuming {args.resume} at iteration {trainer.iteration} (epoch {trainer.epoch})", file=sys.stderr)
    epochs = args.epochs or t["N_epochs"]
    print(f"training KAEM on {dataset}: {x_train.shape[0]} images, batch {trainer.batch}, "
          f"{trainer.iters_per_epoch} it/epoch, {epochs} epochs, objective {trainer.mode}, device {be.device}, "
          f"{sum(int(p.size) for p in model.parameters().values())} parameters -> {out}", file=sys.stderr)
    trainer.run(epochs, args.max_iters, log_every=args.log_every)
    print(f"saved {os.path.join(out, 'ckpt.npz')}", file=sys.stderr)
    return 0


def cmd_sample(args: Any) -> int:
    from kaem.backend import get_backend, to_numpy
    from kaem.checkpoint import load_checkpoint, restore_model
    from kaem.atomic import atomic_open
    from kaem.images import image_grid, save_png

    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    x = to_numpy(model.generate(args.n, be.rng(args.seed))).reshape((args.n,) + model.data_shape)
    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    save_png(args.out, image_grid(x))
    print(f"wrote {args.out} ({args.n} samples)")
    if args.npy:
        npy = args.out[:-4] + ".npy"
        with atomic_open(npy, "wb", suffix=".npy") as fh:
            np.save(fh, x)
        print(f"wrote {npy} {x.shape}")
    return 0


def cmd_eval(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.checkpoint import load_checkpoint, restore_model
    from kaem.evaluate import evaluate

    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    t = model.cfg["TRAINING"]
    _, x_test = _load_data(ckpt["meta"]["dataset"], args, None, args.n_test or t["N_test"])
    S = args.samples or t["eval_importance_samples"]
    res = evaluate(model, be.asarray(x_test.reshape(x_test.shape[0], -1)), S, be.rng(args.seed))
    res.update(n_test=int(x_test.shape[0]), iteration=int(ckpt["meta"]["iteration"]))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"checkpoint {args.ckpt} (iteration {res['iteration']}), {res['n_test']} test images")
        print(f"held-out log-likelihood: {res['loglik_nats']:.3f} nats/image, {res['bits_per_dim']:.5f} bits/dim "
              f"(S = {S} prior samples, σ = {res['sigma']})")
        print(f"test MSE (generated vs test images): {res['test_mse']:.5f}")
        print(f"prior quadrature check: max |Δ log Z| when the Gauss–Legendre nodes double = {res['logZ_quad_err']:.2e}"
              + ("  (large: raise EbmModel.GaussQuad_nodes)" if res["logZ_quad_err"] > 1e-3 else ""))
    return 0


def cmd_sweep(args: Any) -> int:
    """Each planned run is an ordinary ``train`` (resumed if its checkpoint exists); the
    summary is rewritten after every run, so it is current even if the sweep stops."""
    from kaem.sweep import summary_entry, sweep_plan, write_summary

    out = args.out or os.path.join("runs", f"sweep-{args.dataset}")
    plan = sweep_plan(args.dataset)
    names = [p["run"] for p in plan]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise CLIError(f"--only: unknown run(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        plan = [p for p in plan if p["run"] in args.only]
    entries = []
    for i, p in enumerate(plan, 1):
        run_dir = os.path.join(out, p["run"])
        ckpt = os.path.join(run_dir, "ckpt.npz")
        print(f"=== sweep {i}/{len(plan)}: {p['run']} (preset {p['preset']}) -> {run_dir}", file=sys.stderr)
        resume = os.path.exists(ckpt)
        train_args = argparse.Namespace(**{**vars(args), "dataset": args.dataset, "preset": None if resume else p["preset"],
                                           "config": None, "mode": None, "out": run_dir,
                                           "resume": ckpt if resume else None,
                                           "set": [] if resume else p["overrides"] + list(args.set)})
        if resume:
            for k in ("n_train", "batch_size", "dtype"):
                setattr(train_args, k, None)
        try:
            cmd_train(train_args)
            entries.append(summary_entry(p, run_dir, "ok"))
        except Exception as e:  # one diverging or broken run must not end the sweep
            entries.append(summary_entry(p, run_dir, "failed", f"{type(e).__name__}: {e}"))
            print(f"error: run {p['run']} failed: {e}", file=sys.stderr)
        csv_path, md_path = write_summary(out, entries)
    print(open(md_path).read())
    print(f"wrote {csv_path} and {md_path}")
    return 0 if all(e["status"] == "ok" for e in entries) else 1


def cmd_plot_prior(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.checkpoint import load_checkpoint, restore_model
    from kaem.plots import prior_density_grid, save_image

    if not args.out.lower().endswith(".png"):
        raise CLIError(f"--out must be a .png path, got {args.out!r}")
    if args.points < 2:
        raise CLIError(f"--points must be at least 2, got {args.points}")
    ckpt = load_checkpoint(args.ckpt)
    be = get_backend(args.device, ckpt["meta"].get("dtype", "float32"))
    model = restore_model(ckpt, be)
    prior = model.prior
    for flag, idx, size in (("--q", args.q, prior.Q), ("--p", args.p, prior.P)):
        bad = [i for i in idx or [] if not 0 <= i < size]
        if bad:
            raise CLIError(f"{flag} {bad[0]} is out of range: this checkpoint has {flag[2:].upper()} = {size}, "
                           f"valid {flag} values are 0..{size - 1}")
    title = (f"prior densities pi_qp(z) = exp(f_qp(z)) pi0(z) / Z_qp of {os.path.basename(args.ckpt)}, "
             f"iteration {int(ckpt['meta']['iteration'])}")
    img = prior_density_grid(prior, args.q, args.p, n_points=args.points, show_pi0=not args.no_pi0, title=title)
    save_image(args.out, img)
    print(f"wrote {args.out} ({img.size[0]}x{img.size[1]} px)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kaem.backend import BackendError
    from kaem.checkpoint import CheckpointError
    from kaem.config import ConfigError
    from kaem.datasets import DatasetError
    from kaem.train import TrainingError

    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "sweep": cmd_sweep,
                "plot-prior": cmd_plot_prior}
    try:
        return commands[args.command](args)
    except (CLIError, ConfigError, DatasetError, CheckpointError, BackendError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (CLIError, ConfigError)) else 1
    except OSError as e:  # unwritable --out, full disk, ...: say so, without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
