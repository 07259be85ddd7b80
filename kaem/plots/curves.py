"""Training curves from log.csv: one panel per logged metric, the runs overlaid in their own
colours with a legend above."""
from __future__ import annotations

import math
from typing import Callable, Sequence

from PIL import Image

from kaem.plots.drawing import (BLUE, GREY, GRID_FONT_PX, LINE_H, RED, Series, canvas, dashed_line, font, nice_ticks,
                               panel, tick_format)

# (log.csv column, panel title), drawn where at least one run has a finite value
CURVE_METRICS = (("train_loss", "train loss (epoch mean)"),
                 ("heldout_loglik_nats", "held-out log-likelihood (nats/image)"),
                 ("test_mse", "test MSE (generated vs test images)"),
                 ("ess_mean", "mean ESS (importance sampling)"),
                 ("accept_rate", "sampler acceptance rate"),
                 ("swap_rate", "replica exchange swap rate"))
CURVE_X = {"epoch": ("epoch", "epoch"), "iteration": ("iteration", "iteration"),
           "time": ("time_s", "training time (s)")}  # --x name -> (log column, axis label)
PALETTE = (BLUE, RED, (40, 150, 60), (230, 140, 20), (140, 70, 170), (20, 160, 170), (150, 100, 50), GREY)
CURVE_PANEL = (400, 260)  # one curve panel, pixels


def _curve_ylim(runs: Sequence[tuple[str, list[dict[str, float]]]], metric: str,
                full_range: bool) -> tuple[tuple[float, float], bool]:
    """The y range of one metric over all runs, padded 5%: by default from the trained rows
    (iteration > 0) when they hold two or more values, so that the untrained model's
    far-off evaluation does not flatten the curves. Returns (ylim, whether a value is off it)."""
    every = [(r["iteration"], r[metric]) for _, rows in runs for r in rows if math.isfinite(r.get(metric, math.nan))]
    trained = [v for it, v in every if it > 0]
    ys = trained if len(trained) >= 2 and not full_range else [v for _, v in every]
    lo, hi = min(ys), max(ys)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(lo) or 1.0
    ylim = (lo - pad, hi + pad)
    return ylim, any(not ylim[0] <= v <= ylim[1] for _, v in every)


def training_curves(runs: Sequence[tuple[str, list[dict[str, float]]]], x: str = "epoch",
                    full_range: bool = False) -> tuple[Image.Image, dict[str, Callable[[float, float], tuple[float, float]]]]:
    """Training curves of one or more runs, overlaid, one panel per metric.

    runs: (label, rows) pairs, rows as ``kaem.run.logfile.read_log`` returns them. x: ``epoch``,
    ``iteration`` or ``time`` (training seconds). A panel is drawn for each metric of
    ``CURVE_METRICS`` that some run logged (ESS only in importance sampling, acceptance
    and swap rates only with Langevin samplers / thermodynamic integration); each run is a
    line with a dot per logged value, in its own colour, named in the legend above.
    The y range leaves out the untrained row (iteration 0) unless ``full_range``; lines
    leaving the range are cut at the frame. Returns the image and, per metric drawn, the
    data -> pixel map of its panel.
    """
    if x not in CURVE_X:
        raise ValueError(f"unknown x axis {x!r}; valid: {', '.join(CURVE_X)}")
    if not runs:
        raise ValueError("no runs to plot")
    xcol, xlabel = CURVE_X[x]
    metrics = [(m, t) for m, t in CURVE_METRICS
               if any(math.isfinite(r.get(m, math.nan)) for _, rows in runs for r in rows)]
    fnt = font(GRID_FONT_PX)
    pw, ph = CURVE_PANEL
    cols = max(1, min(len(metrics), 2 if len(metrics) <= 4 else 3))
    width = cols * pw
    # legend: "title" line, then swatch + label entries flowing over as many lines as needed
    entries, line, cur = [], 0, 6.0
    for k, (label, _) in enumerate(runs):
        w = 30 + fnt.getlength(label) + 18
        if cur + w > width - 6 and cur > 6:
            line, cur = line + 1, 6.0
        entries.append((cur, line, label, PALETTE[k % len(PALETTE)], k >= len(PALETTE)))
        cur += w
    header = 6 + LINE_H * (line + 2)
    rows_of_panels = max(1, math.ceil(len(metrics) / cols))
    img, draw = canvas(width, header + rows_of_panels * ph)
    draw.text((6, 4), f"training curves ({len(runs)} run{'s' * (len(runs) > 1)}, x = {xlabel})", fill="black", font=fnt)
    for cx, ln, label, color, dashed in entries:
        yy = 4 + LINE_H * (ln + 1) + 7
        if dashed:
            dashed_line(draw, [(cx, yy), (cx + 24, yy)], color, 3, (5, 3))
        else:
            draw.line([(cx, yy), (cx + 24, yy)], fill=color, width=3)
        draw.text((cx + 30, yy - 7), label, fill="black", font=fnt)
    xs_all = [r[xcol] for _, rows in runs for r in rows if math.isfinite(r.get(xcol, math.nan))]
    xlim = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    if xlim[1] <= xlim[0]:
        xlim = (xlim[0], xlim[0] + 1.0)
    xt = nice_ticks(*xlim, 5, integer=x != "time")
    maps = {}
    for i, (metric, title) in enumerate(metrics):
        ylim, clipped = _curve_ylim(runs, metric, full_range)
        yt = nice_ticks(*ylim, 5)
        series = []
        for k, (_, rows) in enumerate(runs):
            color, dash = PALETTE[k % len(PALETTE)], (6, 3) if k >= len(PALETTE) else None
            xs = [r.get(xcol, math.nan) for r in rows]
            ys = [r.get(metric, math.nan) for r in rows]
            series += [Series(xs, ys, color=color, width=2, dash=dash), Series(xs, ys, kind="scatter", color=color, radius=3)]
        r, c = divmod(i, cols)
        maps[metric] = panel(draw, (c * pw, header + r * ph, pw, ph), series, title=title,
                             subtitle="untrained value(s) off scale" if clipped else "", subtitle_color=GREY,
                             xlabel=xlabel, xlim=xlim, ylim=ylim, xticks=xt, yticks=yt,
                             xfmt=tick_format(xt), yfmt=tick_format(yt), pad=(64, 14, 36, 40), fnt=fnt)
    return img, maps
