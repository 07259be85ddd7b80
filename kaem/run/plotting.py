"""Figures of runs: ``plot-log`` (training curves of one or more runs from their log.csv)
and ``plot-prior`` (the learned prior densities π_{q,p} of a checkpoint). The drawing is
``kaem.plots``; this module checks the request, gathers the data and writes the PNG."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from kaem.run.failures import CommandError
from kaem.run.sampling import check_png_path, load_model

Say = Callable[[str], None]


def plot_log(runs: Sequence[str], out: str, labels: Sequence[str] | None = None, x: str = "epoch",
             full_range: bool = False, say: Say = print) -> dict[str, Any]:
    """Overlay the per-epoch logs of ``runs`` (run folders or log.csv paths), one panel per
    metric, into the PNG ``out``; the legend names are ``labels`` (default: the folder names,
    or the paths when two folders share a name); ``x`` is epoch, iteration or time."""
    from kaem.plots import save_image, training_curves
    from kaem.run.logfile import LogError, log_path, read_log

    check_png_path(out)
    if labels and len(labels) != len(runs):
        raise CommandError(f"--labels gives {len(labels)} name(s) for {len(runs)} run(s); give one per RUN")
    names = list(labels or [os.path.basename(os.path.dirname(os.path.abspath(log_path(r)))) for r in runs])
    if not labels and len(set(names)) < len(names):  # same folder names: tell them apart by path
        names = list(runs)
    try:
        logs = [(name, read_log(r)) for name, r in zip(names, runs)]
    except LogError as e:
        raise CommandError(str(e)) from None
    img, _ = training_curves(logs, x=x, full_range=full_range)
    save_image(out, img)
    say(f"wrote {out} ({img.size[0]}x{img.size[1]} px, {len(logs)} run(s))")
    return {"output": out}


def plot_prior(ckpt_path: str, out: str, q: Sequence[int] | None = None, p: Sequence[int] | None = None,
               points: int = 400, no_pi0: bool = False, device: str = "cpu", say: Say = print) -> dict[str, Any]:
    """Plot the normalised prior densities π_{q,p}(z) = exp(f_{q,p}(z)) π0(z) / Z_{q,p} of the
    checkpoint (rows ``q``, columns ``p``, 0-based; ``points`` grid points per curve; π0
    dashed unless ``no_pi0``) into the PNG ``out``. The deep prior has no such densities."""
    from kaem.plots import prior_figure, save_image

    check_png_path(out)
    if points < 2:
        raise CommandError(f"--points must be at least 2, got {points}")
    ckpt, _, model = load_model(ckpt_path, device)
    prior = model.prior
    if not prior.has_exact_logZ:
        raise CommandError(f"{ckpt_path} has the deep prior (one energy over z ∈ R^{prior.Q}): it has no univariate "
                           "densities π_{q,p} to plot")
    for flag, idx, size in (("--q", q, prior.Q), ("--p", p, prior.P)):
        bad = [i for i in idx or [] if not 0 <= i < size]
        if bad:
            raise CommandError(f"{flag} {bad[0]} is out of range: this checkpoint has {flag[2:].upper()} = {size}, "
                               f"valid {flag} values are 0..{size - 1}")
    source = f"{ckpt_path}, iteration {int(ckpt['meta']['iteration'])}"
    try:
        img = prior_figure(prior, q, p, n_points=points, show_pi0=not no_pi0, source=source)
    except ValueError as e:  # a prior kind without a density figure
        raise CommandError(str(e)) from None
    save_image(out, img)
    say(f"wrote {out} ({img.size[0]}x{img.size[1]} px)")
    return {"output": out}
