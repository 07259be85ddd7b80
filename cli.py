#!/usr/bin/env python3
"""KAEM command line: train, sample and evaluate Kolmogorov–Arnold Energy Models.

    python cli.py train  --dataset fmnist --epochs 1 --out runs/fmnist
    python cli.py sample --ckpt runs/fmnist/ckpt.npz --n 64 --out samples.png
    python cli.py eval   --ckpt runs/fmnist/ckpt.npz

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


MODES = ("is", "ula", "automala", "thermo")


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
    raise CLIError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")


def build_parser() -> argparse.ArgumentParser:
    from kaem.backend import DEVICES, DTYPES
    from kaem.data import DATASETS

    p = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,sample,eval}")

    def device_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (numpy), gpu (cupy; needs the [gpu] extra) or auto (default: cpu)")
        sp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", default="data", help="dataset cache folder (default: data)")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")

    t = sub.add_parser("train", help="train a model (importance sampling, Langevin or thermodynamic)",
                       description="Train a KAEM by maximum likelihood with importance sampling (default), "
                                   "Langevin posterior sampling (ULA or autoMALA) or thermodynamic integration. "
                                   "Writes OUT/ckpt.npz (each epoch and at the end) and OUT/log.csv (one row per epoch).")
    t.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: mnist; from the checkpoint with --resume)")
    t.add_argument("--config", metavar="FILE", help="INI file with the reference's sections and keys")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.key=value",
                   help="override one config value (repeatable), e.g. --set EbmModel.grid_size=10")
    t.add_argument("--mode", choices=MODES,
                   help="objective, a shorthand for config keys (applied before --set; a --set that "
                        "contradicts it is an error): is = importance sampling; "
                        "ula = POST_LANGEVIN.use_langevin=true; automala = that and use_autoMALA=true; "
                        "thermo = THERMODYNAMIC_INTEGRATION.num_temps=5 unless the config sets more than 1 "
                        "(default: whatever the config selects, IS for the defaults)")
    t.add_argument("--epochs", type=_positive_int, help="epochs in total (default: TRAINING.N_epochs)")
    t.add_argument("--max-iters", type=_positive_int, help="stop after this many iterations in total")
    t.add_argument("--n-train", type=_positive_int, help="training images used (default: TRAINING.N_train)")
    t.add_argument("--n-test", type=_positive_int, help="held-out images for the per-epoch evaluation (default: TRAINING.N_test)")
    t.add_argument("--batch-size", type=_positive_int, help="minibatch size (default: TRAINING.batch_size)")
    t.add_argument("--dtype", choices=DTYPES, help="float type (default: TRAINING.dtype)")
    t.add_argument("--out", metavar="DIR", help="output folder (default: runs/DATASET, or the checkpoint's folder with --resume)")
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint at its saved iteration")
    t.add_argument("--log-every", type=_positive_int, default=50, help="progress line every N iterations (default: 50)")
    device_args(t)
    data_args(t)

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
    return p


# ---- commands -------------------------------------------------------------------------------
def _load_data(dataset: str, args: Any, n_train: int | None, n_test: int) -> tuple[np.ndarray | None, np.ndarray]:
    from kaem.data import load_dataset

    dl = not args.no_download
    train = None if n_train is None else load_dataset(dataset, "train", args.data_dir, dl, n=n_train)
    return train, load_dataset(dataset, "test", args.data_dir, dl, n=n_test)


def cmd_train(args: Any) -> int:
    from kaem.backend import get_backend
    from kaem.checkpoint import load_checkpoint, restore_model
    from kaem.config import config_from_ini, load_config
    from kaem.data import dataset_shape
    from kaem.langevin import objective_mode
    from kaem.model import KAEM
    from kaem.train import Trainer

    ckpt = None
    if args.resume:
        if args.config or args.set or args.n_train or args.batch_size or args.dtype:
            raise CLIError("--resume continues the stored run: --config, --set, --n-train, --batch-size "
                           "and --dtype cannot change it (start a new run with --out instead)")
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
        dataset = args.dataset or "mnist"
        overrides = list(args.set)
        for key, val in (("N_train", args.n_train), ("batch_size", args.batch_size), ("dtype", args.dtype)):
            if val is not None:
                overrides.append(f"TRAINING.{key}={val}")
        if args.mode:  # the mode's keys first, so that explicit --set values win
            num_temps = load_config(dataset, args.config, overrides)["THERMODYNAMIC_INTEGRATION"]["num_temps"]
            overrides = mode_overrides(args.mode, num_temps) + overrides
        cfg = load_config(dataset, args.config, overrides)
        if args.mode and objective_mode(cfg) != args.mode:
            raise CLIError(f"--mode {args.mode} conflicts with the --set/--config values, which select "
                           f"{objective_mode(cfg)}")
        out = args.out or os.path.join("runs", dataset)
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
        tmp = npy + ".tmp.npy"
        np.save(tmp, x)
        os.replace(tmp, npy)
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kaem.backend import BackendError
    from kaem.checkpoint import CheckpointError
    from kaem.config import ConfigError
    from kaem.data import DatasetError
    from kaem.train import TrainingError

    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}
    try:
        return commands[args.command](args)
    except (CLIError, ConfigError, DatasetError, CheckpointError, BackendError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (CLIError, ConfigError)) else 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
