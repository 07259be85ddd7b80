"""Plots drawn with Pillow alone (no plotting library): line/scatter panels with axes, tick
labels, a title and an optional fitted line, and the grid of learned prior densities
π_{q,p} (spec §1.1, §6: "every π_{q,p} can be plotted and looked at"), or for the mixture
prior (§1.2) each π_q with its weighted components.

    img, draw = canvas(420, 330)
    panel(draw, (0, 0, 420, 330), [Series(xs, ys, kind="scatter")], title="...", fit=(a, b))
    save_image("out.png", img)

    save_image("prior.png", prior_density_grid(model.prior))   # first 8 q x first 5 p
    save_image("prior.png", prior_figure(model.prior))         # the grid of the prior's kind

Everything here runs on the host: device arrays are copied with ``to_numpy`` first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kaem.run.atomic import atomic_open
from kaem.backend import to_numpy

BLUE = (30, 90, 200)
RED = (200, 60, 60)
GREY = (110, 110, 110)
FILL = (214, 226, 246)

DEFAULT_QS = 8  # prior_density_grid without qs: the first 8 q ...
DEFAULT_PS = 5  # ... and the first 5 p
PANEL_SIZE = (200, 134)  # one density panel, pixels (width, height)
LINE_H = 15  # one line of header text, pixels
HEADER_H = 6 + 2 * LINE_H  # the header above the density panels: two lines, more if it must wrap
GRID_FONT_PX = 12  # text size of the density grid (Aileron at 10 px runs its words together)


def font(size: int | None = None) -> Any:
    """Pillow's built-in font: FreeType Aileron (10 px, or ``size``) where Pillow has
    FreeType, else the bitmap font (its one size)."""
    if size is None:
        return ImageFont.load_default()
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A white RGB image and a drawing context on it."""
    img = Image.new("RGB", (int(width), int(height)), "white")
    return img, ImageDraw.Draw(img)


def save_image(path: str, img: Image.Image) -> None:
    """Write a PIL image as PNG, atomically."""
    with atomic_open(path, "wb", suffix=".png") as fh:
        img.save(fh, format="PNG")


@dataclass
class Series:
    """One data series of a panel.

    kind: ``line`` (polyline, ``dash`` = (on, off) pixels for a dashed one), ``scatter``
    (filled dots of ``radius``) or ``fill`` (the area between the curve and y = ylim[0],
    drawn under everything else). Non-finite y values break a line / are skipped.
    """

    x: Sequence[float]
    y: Sequence[float]
    kind: str = "line"
    color: tuple[int, int, int] = BLUE
    width: int = 1
    dash: tuple[int, int] | None = None
    radius: int = 4


def _tick_range(lo: float, hi: float, step: float) -> range:
    """The integers i with i·step inside [lo, hi]."""
    return range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)


def _ticks_at(lo: float, hi: float, step: float) -> list[float]:
    """Every multiple of step inside [lo, hi], rounded to 3 digits below the step's (so that
    3·0.1 is 0.3)."""
    digits = 3 - math.floor(math.log10(step))
    return [round(i * step, digits) + 0.0 for i in _tick_range(lo, hi, step)]  # + 0.0: no "-0"


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round tick values (steps 1, 2, 2.5 or 5 × 10^k) inside [lo, hi].

    The step is the largest round one that still leaves at least max(2, n − 1) ticks inside
    the range (a step picked from the range alone can leave a single tick: ±0.9 with step 1
    has only "0"). integer: steps of at least 1 and no 2.5 (epochs, counts); if even step 1
    leaves fewer ticks, step 1 it is.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    want = max(2, n - 1)
    e = math.floor(math.log10((hi - lo) / max(n - 1, 1)))
    steps = [m * 10.0 ** k for k in range(e - 1, e + 2) for m in (1, 2, 2.5, 5)]
    if integer:
        steps = [s for s in steps if s >= 1 and s == int(s)] or [1.0]
    fitting = [s for s in steps if len(_tick_range(lo, hi, s)) >= want]
    return _ticks_at(lo, hi, max(fitting) if fitting else min(steps))


def _finite_runs(pts: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs, cur = [], []
    for p in pts:
        if math.isfinite(p[0]) and math.isfinite(p[1]):
            cur.append(p)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _clip_segment(a: tuple[float, float], b: tuple[float, float],
                  rect: tuple[float, float, float, float]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of segment a-b inside rect = (x0, y0, x1, y1) (Liang–Barsky), or None."""
    (xa, ya), (xb, yb) = a, b
    dx, dy = xb - xa, yb - ya
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, xa - rect[0]), (dx, rect[2] - xa), (-dy, ya - rect[1]), (dy, rect[3] - ya)):
        if p == 0:
            if q < 0:
                return None
        elif p < 0:
            t0 = max(t0, q / p)
        else:
            t1 = min(t1, q / p)
    if t0 > t1:
        return None
    return (xa + t0 * dx, ya + t0 * dy), (xa + t1 * dx, ya + t1 * dy)


def _clipped_runs(run: list[tuple[float, float]],
                  rect: tuple[float, float, float, float]) -> list[list[tuple[float, float]]]:
    """A polyline cut to rect: the pieces that stay inside (a lone point inside is kept)."""
    if len(run) == 1:
        (x, y), = run
        return [run] if rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3] else []
    pieces: list[list[tuple[float, float]]] = []
    for a, b in zip(run, run[1:]):
        seg = _clip_segment(a, b, rect)
        if seg is None:
            continue
        if pieces and pieces[-1][-1] == seg[0]:
            pieces[-1].append(seg[1])
        else:
            pieces.append([seg[0], seg[1]])
    return pieces


def _dashed(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color: Any, width: int,
            dash: tuple[int, int]) -> None:
    """A dashed polyline: the dash pattern runs on along the arc length across vertices."""
    on, off = dash
    period, s = on + off, 0.0
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        seg = math.hypot(xb - xa, yb - ya)
        t = 0.0
        while t < seg:
            phase = (s + t) % period
            step = max(min((on - phase) if phase < on else (period - phase), seg - t), 1e-6)
            if phase < on:
                u0, u1 = t / seg, min(t + step, seg) / seg
                draw.line([(xa + u0 * (xb - xa), ya + u0 * (yb - ya)),
                           (xa + u1 * (xb - xa), ya + u1 * (yb - ya))], fill=color, width=width)
            t += step
        s += seg


def panel(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], series: Sequence[Series], *,
          title: str = "", subtitle: str = "", subtitle_color: Any = RED, xlabel: str = "", ylabel: str = "",
          xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
          xticks: Sequence[float] | int = 5, yticks: Sequence[float] | int = 5,
          xfmt: str = "{:g}", yfmt: str = "{:.2f}", fit: tuple[float, float] | None = None,
          pad: tuple[int, int, int, int] = (58, 20, 48, 46), title_y: int = 6,
          fnt: Any = None) -> Callable[[float, float], tuple[float, float]]:
    """Draw one framed x/y panel into ``box`` = (left, top, width, height) of ``draw``'s image.

    pad: (left, right, top, bottom) pixels between the box and the plot frame; title (and
    subtitle, 12 px lower) sit ``title_y`` px below the box top, left-aligned with the
    frame; xlabel is centred under the tick labels; ylabel sits above the y tick labels.
    xlim/ylim default to the data range (ylim from 0 when all y ≥ 0); lines and dots
    outside them are cut at the frame. xticks/yticks: the
    tick values, or an int n for about n round ones inside the limits (``nice_ticks``).
    fit = (slope, intercept): the line slope·x + intercept across xlim, drawn in red under
    the series. Returns the data -> pixel map of the panel.
    """
    fnt = fnt or font(GRID_FONT_PX)  # Aileron at 10 px runs its words together
    left, top, W, H = box
    x0, x1, y_bot, y_top = left + pad[0], left + W - pad[1], top + H - pad[3], top + pad[2]
    xs_all = [float(v) for s in series for v in s.x if math.isfinite(float(v))]
    ys_all = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    if xlim is None:
        xlim = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    if ylim is None:
        lo = min(ys_all) if ys_all else 0.0
        ylim = (min(lo, 0.0), max(ys_all) * 1.1 if ys_all else 1.0)
    xmin, xmax = xlim
    ymin, ymax = ylim
    if xmax <= xmin:
        xmax = xmin + 1.0
    if not ymax > ymin:  # also catches NaN
        ymax = ymin + 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return (x0 + (x - xmin) / (xmax - xmin) * (x1 - x0), y_bot - (y - ymin) / (ymax - ymin) * (y_bot - y_top))

    for s in series:  # areas first: the frame and the lines go on top
        if s.kind == "fill":
            for run in _finite_runs([px(float(a), float(b)) for a, b in zip(s.x, s.y)]):
                base = px(0, ymin)[1]
                draw.polygon([(run[0][0], base), *run, (run[-1][0], base)], fill=s.color)
    draw.rectangle([x0, y_top, x1, y_bot], outline="black")

    def ticks(spec: Sequence[float] | int, lo: float, hi: float) -> list[float]:
        if isinstance(spec, int):
            return nice_ticks(lo, hi, spec)
        return [float(v) for v in spec]

    _, b_top, _, b_bot = fnt.getbbox("0")
    mid = (b_top + b_bot) / 2  # a digit's vertical centre below the text origin
    for yv in ticks(yticks, ymin, ymax):
        _, yp = px(xmin, yv)
        draw.line([x0 - 4, yp, x0, yp], fill="black")
        label = yfmt.format(yv)
        draw.text((x0 - 6 - draw.textlength(label, font=fnt), yp - mid), label, fill="black", font=fnt)
    for xv in ticks(xticks, xmin, xmax):
        xp, _ = px(xv, ymin)
        draw.line([xp, y_bot, xp, y_bot + 4], fill="black")
        label = xfmt.format(xv)
        draw.text((xp - draw.textlength(label, font=fnt) / 2, y_bot + 6), label, fill="black", font=fnt)
    if fit is not None:
        a, b = fit
        draw.line([px(xmin, a * xmin + b), px(xmax, a * xmax + b)], fill=RED, width=2)
    frame = (x0, y_top, x1, y_bot)  # lines and dots outside xlim/ylim are cut at the frame
    for s in series:
        pts = [px(float(a), float(b)) for a, b in zip(s.x, s.y)]
        if s.kind == "scatter":
            for cx, cy in _finite_runs_flat(pts):
                if x0 <= cx <= x1 and y_top <= cy <= y_bot:
                    r = s.radius
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=s.color)
        elif s.kind == "line":
            for run in (piece for r in _finite_runs(pts) for piece in _clipped_runs(r, frame)):
                if s.dash:
                    _dashed(draw, run, s.color, s.width, s.dash)
                elif len(run) > 1:
                    draw.line(run, fill=s.color, width=s.width, joint="curve")
        elif s.kind != "fill":
            raise ValueError(f"unknown series kind {s.kind!r}; valid: line, scatter, fill")
    if title:
        draw.text((x0, top + title_y), title, fill="black", font=fnt)
    if subtitle:
        draw.text((x0, top + title_y + 12), subtitle, fill=subtitle_color, font=fnt)
    if xlabel:
        draw.text(((x0 + x1) / 2 - draw.textlength(xlabel, font=fnt) / 2, top + H - 18), xlabel,
                  fill="black", font=fnt)
    if ylabel:
        draw.text((left + 4, y_top - 24), ylabel, fill="black", font=fnt)
    return px


def _finite_runs_flat(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [p for run in _finite_runs(pts) for p in run]


# ---- the prior's densities ----------------------------------------------------------------------
def _select(kind: str, idx: Sequence[int] | None, size: int, default: int) -> list[int]:
    if idx is None:
        return list(range(min(default, size)))
    idx = [int(i) for i in idx]
    if not idx:
        raise ValueError(f"no {kind} indices given; valid: 0..{size - 1} ({kind.upper()} = {size})")
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise ValueError(f"{kind} index {bad[0]} out of range; valid: 0..{size - 1} ({kind.upper()} = {size})")
    return idx


def select_indices(prior: Any, qs: Sequence[int] | None = None,
                   ps: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """The (q, p) indices to plot, 0-based: the given ones (checked against Q and P; a bad one
    raises ValueError naming the valid range), by default the first 8 q and the first 5 p."""
    return _select("q", qs, prior.Q, DEFAULT_QS), _select("p", ps, prior.P, DEFAULT_PS)


def _z_grid(prior: Any, n_points: int) -> Any:
    """n_points evenly spaced z on every p's integration interval, ends included: (n, P) on
    the prior's device (all P, since ``forward_pointwise`` takes every input at once)."""
    xp = prior.be.xp
    lo, hi = prior.interval()
    t = xp.linspace(0.0, 1.0, n_points, dtype=lo.dtype)[:, None]
    return lo[None, :] + t * (hi - lo)[None, :]


def prior_density_curves(prior: Any, qs: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                         n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The normalised densities π_{q,p}(z) = exp(f_{q,p}(z)) π0(z) / Z_{q,p} on an even grid.

    z runs over each p's integration interval [a_p, b_p] (``prior.interval()``, ends
    included). π0 enters exactly as in Z_{q,p} and in the inverse-transform sampler (without
    the ε of ``log_pi0``; ``prior.densities``), so each curve is the density the sampler draws from and
    integrates to 1 up to the quadrature and grid error. Returns host float64 arrays
    z (n, len(ps)) and dens (n, len(qs), len(ps)).
    """
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    qs, ps = select_indices(prior, qs, ps)
    z = _z_grid(prior, n_points)  # (n, P)
    dens = to_numpy(prior.densities(z)).astype(np.float64)  # (n, Q, P): every q at once
    return to_numpy(z).astype(np.float64)[:, ps], dens[:, qs][:, :, ps]


def pi0_density_curves(prior: Any, ps: Sequence[int] | None = None,
                       n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """π0 renormalised to each p's integration interval, π0(z) / ∫_a^b π0 (the same
    Gauss–Legendre rule as Z), on the grid of ``prior_density_curves``: what π_{q,p} would
    be with f_{q,p} = 0. Returns z (n, len(ps)) and dens (n, len(ps)), host float64."""
    _, ps = select_indices(prior, [0], ps)
    z = _z_grid(prior, n_points)
    dens = prior.pi0_densities(z)[:, 0]  # (n, P): π0 is shared by every q
    return to_numpy(z).astype(np.float64)[:, ps], to_numpy(dens).astype(np.float64)[:, ps]


def _header_canvas(width: int, body_h: int, head: str, detail: str, fnt: Any) -> tuple[Image.Image, Any, int]:
    """A canvas ``width`` wide with the title (black) and detail text (grey) wrapped above a
    body of ``body_h`` pixels; returns the image, its drawing context and the header height."""
    lines = [(t, "black") for t in wrap_text(head, width - 12, fnt)]
    lines += [(t, GREY) for t in wrap_text(detail, width - 12, fnt)]
    header = 6 + LINE_H * len(lines)
    img, draw = canvas(width, header + body_h)
    for k, (text, color) in enumerate(lines):
        draw.text((6, 4 + LINE_H * k), text, fill=color, font=fnt)
    return img, draw, header


def _density_panel(draw: Any, box: tuple[float, float, float, float], z: np.ndarray, y: np.ndarray,
                   extra: list[Series], title: str, fnt: Any) -> None:
    """One density panel: y on z shaded and drawn blue over the ``extra`` curves, y from 0 to
    1.1 × the highest curve."""
    curves = [y] + [np.asarray(e.y, dtype=float) for e in extra]
    top = max((float(np.nanmax(np.where(np.isfinite(c), c, np.nan))) for c in curves if np.isfinite(c).any()),
              default=1.0)
    ymax = 1.1 * top if top > 0 else 1.0
    lo, hi = float(z[0]), float(z[-1])
    yt = nice_ticks(0.0, ymax, 4)
    series = [Series(z, y, kind="fill", color=FILL), *extra, Series(z, y, color=BLUE, width=2)]
    panel(draw, box, series, title=title, xlim=(lo, hi), ylim=(0.0, ymax), xticks=nice_ticks(lo, hi, 4), yticks=yt,
          xfmt="{:g}", yfmt=_fmt_for(yt), pad=(38, 8, 19, 20), title_y=2, fnt=fnt)


def prior_density_grid(prior: Any, qs: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                       n_points: int = 400, show_pi0: bool = True, title: str | None = None,
                       panel_size: tuple[int, int] = PANEL_SIZE) -> Image.Image:
    """One small panel per selected (q, p): rows are q, columns are p (0-based indices).

    Each panel shows π_{q,p} (blue, area shaded) on [a_p, b_p] with its own y scale (tick
    labels give the density), and with ``show_pi0`` the interval-normalised π0 dashed grey
    for comparison. Defaults: the first 8 q × the first 5 p (all of them when fewer).
    The image is len(ps)·panel_size[0] wide and header + len(qs)·panel_size[1] high, the
    header being HEADER_H (two lines of text) unless the grid is too narrow for them, when
    the text wraps onto more lines of LINE_H pixels each.
    """
    qs, ps = select_indices(prior, qs, ps)
    z, dens = prior_density_curves(prior, qs, ps, n_points)
    z0, d0 = pi0_density_curves(prior, ps, n_points) if show_pi0 else (None, None)
    pw, ph = panel_size
    fnt = font(GRID_FONT_PX)
    head = title or "prior densities pi_qp(z) = exp(f_qp(z)) pi0(z) / Z_qp"
    shown = f"rows q = {_ranges(qs)} (of 0..{prior.Q - 1}), columns p = {_ranges(ps)} (of 0..{prior.P - 1})"
    legend = f"pi0 = {prior.pi0_name}" + (", dashed: pi0 normalised on [a_p, b_p]" if show_pi0 else "")
    img, draw, header = _header_canvas(len(ps) * pw, len(qs) * ph, head, f"{shown}; blue: pi_qp; {legend}", fnt)
    for r, q in enumerate(qs):
        for c, p in enumerate(ps):
            extra = [Series(z0[:, c], d0[:, c], color=GREY, dash=(5, 4))] if show_pi0 else []
            _density_panel(draw, (c * pw, header + r * ph, pw, ph), z[:, c], dens[:, r, c], extra, f"q={q}, p={p}", fnt)
    return img


# ---- the mixture prior: π_q and its weighted components ---------------------------------------
MIX_COLUMNS = 4  # mixture panels per row
MIX_PANEL_SIZE = (260, 160)
COMPONENT_COLORS = ((220, 120, 30), (40, 150, 70), (150, 60, 170), (200, 60, 60), (30, 150, 170),
                    (140, 110, 40), (230, 90, 160), (90, 90, 90))


def mixture_density_curves(prior: Any, qs: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                           n_points: int = 400, with_pi0: bool = False) -> tuple[np.ndarray, ...]:
    """π_q(z) = Σ_p α_{q,p} π_{q,p}(z) and its weighted components α_{q,p} π_{q,p}(z) on an even
    grid of each q's interval (ends included); default: the first 8 q, every component.
    Returns host float64 z (n, len(qs)), mix (n, len(qs)), comps (n, len(ps), len(qs)), and
    with ``with_pi0`` also Σ_p α_{q,p} π0_p(z) normalised on the interval (n, len(qs)): what
    π_q would be with every f = 0."""
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    qs, ps = _select("q", qs, prior.Q, DEFAULT_QS), _select("p", ps, prior.P, prior.P)
    z = _z_grid(prior, n_points)  # (n, Q)
    at = prior.alpha().T[None]  # (1, P, Q)
    weighted = to_numpy(prior.densities(z) * at).astype(np.float64)  # (n, P, Q)
    out = (to_numpy(z).astype(np.float64)[:, qs], weighted.sum(axis=1)[:, qs], weighted[:, ps][:, :, qs])
    if with_pi0:
        out += (to_numpy((prior.pi0_densities(z) * at).sum(axis=1)).astype(np.float64)[:, qs],)
    return out


def mixture_density_grid(prior: Any, qs: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                         n_points: int = 400, show_pi0: bool = True, title: str | None = None,
                         panel_size: tuple[int, int] = MIX_PANEL_SIZE) -> Image.Image:
    """One panel per selected q (MIX_COLUMNS to a row): the mixture π_q (blue, shaded) and its
    weighted components α_{q,p} π_{q,p} (thin coloured lines, the selected p; default all),
    with ``show_pi0`` the π0 mixture dashed grey. Each panel's title gives the largest
    proportions (or says they are uniform). Image: min(len(qs), MIX_COLUMNS) panels wide, header above."""
    qs = _select("q", qs, prior.Q, DEFAULT_QS)
    ps = _select("p", ps, prior.P, prior.P)
    z, mix, comps, *pi0 = mixture_density_curves(prior, qs, ps, n_points, with_pi0=show_pi0)
    alpha = to_numpy(prior.alpha())
    pw, ph = panel_size
    cols = min(len(qs), MIX_COLUMNS)
    rows = -(-len(qs) // cols)
    fnt = font(GRID_FONT_PX)
    head = title or "mixture prior pi_q(z) = sum_p alpha_qp exp(f_qp(z)) pi0_p(z) / Z_qp"
    detail = (f"panels q = {_ranges(qs)} (of 0..{prior.Q - 1}); blue: pi_q; thin: alpha_qp pi_qp for p = "
              f"{_ranges(ps)} (of 0..{prior.P - 1}); pi0 = {prior.pi0_name}"
              + (", dashed: the pi0 mixture" if show_pi0 else ""))
    img, draw, header = _header_canvas(cols * pw, rows * ph, head, detail, fnt)
    for k, q in enumerate(qs):
        extra = [Series(z[:, k], comps[:, j, k], color=COMPONENT_COLORS[j % len(COMPONENT_COLORS)])
                 for j in range(len(ps))]
        if show_pi0:
            extra.append(Series(z[:, k], pi0[0][:, k], color=GREY, dash=(5, 4)))
        top = np.argsort(alpha[q])[::-1][:2]
        name = f"q={q}" + (("  max alpha: " + ", ".join(f"p{p} {alpha[q, p]:.2f}" for p in top))
                           if np.ptp(alpha[q]) > 1e-6 else "  alpha uniform")
        _density_panel(draw, ((k % cols) * pw, header + (k // cols) * ph, pw, ph), z[:, k], mix[:, k], extra, name, fnt)
    return img


PRIOR_FIGURES: dict[str, Callable[..., Image.Image]] = {"univariate": prior_density_grid,
                                                         "mixture": mixture_density_grid}


def prior_figure(prior: Any, qs: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                 n_points: int = 400, show_pi0: bool = True, source: str = "") -> Image.Image:
    """The density figure of a prior's kind (``PRIOR_FIGURES``), its title naming ``source``."""
    if prior.kind not in PRIOR_FIGURES:
        raise ValueError(f"plot-prior draws the {' and '.join(PRIOR_FIGURES)} priors, not the {prior.kind} prior")
    head = {"univariate": "prior densities pi_qp(z) = exp(f_qp(z)) pi0(z) / Z_qp",
            "mixture": "mixture prior pi_q(z) = sum_p alpha_qp pi_qp(z)"}[prior.kind]
    return PRIOR_FIGURES[prior.kind](prior, qs, ps, n_points=n_points, show_pi0=show_pi0,
                                     title=f"{head} of {source}" if source else None)


def wrap_text(text: str, width: float, fnt: Any = None) -> list[str]:
    """Split text at spaces into lines no wider than width pixels (a longer word gets its own
    line)."""
    fnt = fnt or font(GRID_FONT_PX)  # Aileron at 10 px runs its words together
    lines: list[str] = []
    for word in text.split(" "):
        if lines and fnt.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _fmt_for(ticks: Sequence[float]) -> str:
    """The fewest decimals (up to 6) at which every tick label shows its value."""
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:])), default=1.0) or 1.0
    for dec in range(7):
        if all(abs(float(f"{v:.{dec}f}") - v) <= 1e-6 * step for v in ticks):
            return "{:.%df}" % dec
    return "{:.3g}"


def _ranges(idx: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(out)


# ---- training curves ------------------------------------------------------------------------------
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
            _dashed(draw, [(cx, yy), (cx + 24, yy)], color, 3, (5, 3))
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
                             xfmt=_fmt_for(xt), yfmt=_fmt_for(yt), pad=(64, 14, 36, 40), fnt=fnt)
    return img, maps


def real_vs_generated(real: np.ndarray, generated: np.ndarray, n_show: int = 8, title: str = "",
                      tile_px: int = 96) -> Image.Image:
    """A figure comparing data with samples, both host arrays (N, C, H, W) in [0, 1]: a row of
    the first ``n_show`` real images, a row of generated ones, and the per-pixel mean and
    standard deviation over all N of each (what a model that matches the data reproduces).
    One-channel data (fields such as Darcy's u) are drawn in false colour (viridis) on one
    shared scale: [0, 1] for images and means, [0, largest std] for the stds; colour bars
    below say which. RGB data are drawn as they are (std: grey, scaled to the largest).
    """
    from kaem.plots.images import colormap, to_uint8

    C, H, W = real.shape[1:]
    scale = max(1, round(tile_px / max(H, W)))
    th, tw = H * scale, W * scale
    std_hi = float(max(real.std(axis=0).max(), generated.std(axis=0).max(), 1e-12))

    def tile(img: np.ndarray, hi: float = 1.0, is_std: bool = False) -> Image.Image:
        """(C, H, W) -> a PIL tile, upscaled by pixel repetition."""
        if C == 1:
            rgb = colormap(img[0], 0.0, hi)
        elif is_std:
            rgb = to_uint8(np.repeat(img.mean(axis=0, keepdims=True) / hi, 3, axis=0)[None])[0]
        else:
            rgb = to_uint8(img[None])[0]
        return Image.fromarray(np.ascontiguousarray(rgb)).resize((tw, th), Image.NEAREST)

    n = min(n_show, real.shape[0], generated.shape[0])
    fnt = font(GRID_FONT_PX)
    gap, label_w = 6, 150
    width = label_w + max(n, 4) * (tw + gap) + gap
    header = 6 + 2 * LINE_H
    bar_h = 3 * LINE_H if C == 1 else 0
    height = header + 3 * (th + gap + LINE_H) + bar_h + gap
    img, draw = canvas(width, height)
    draw.text((6, 4), title or "real (test) vs generated", fill="black", font=fnt)
    draw.text((6, 4 + LINE_H), f"mean and std over {real.shape[0]} real and {generated.shape[0]} generated",
              fill=GREY, font=fnt)
    rows = [("real (test)", [tile(x) for x in real[:n]], [""] * n),
            ("generated", [tile(x) for x in generated[:n]], [""] * n),
            ("pixel mean / std", [tile(real.mean(axis=0)), tile(generated.mean(axis=0)),
                                  tile(real.std(axis=0), std_hi, True), tile(generated.std(axis=0), std_hi, True)],
             ["mean, real", "mean, generated", "std, real", "std, generated"])]
    for r, (label, tiles, captions) in enumerate(rows):
        y = header + r * (th + gap + LINE_H)
        draw.text((6, y + th // 2 - LINE_H // 2), label, fill="black", font=fnt)
        for c, (t, cap) in enumerate(zip(tiles, captions)):
            x = label_w + gap + c * (tw + gap)
            img.paste(t, (x, y))
            if cap:
                draw.text((x, y + th + 1), cap, fill=GREY, font=fnt)
    if C == 1:  # two colour bars: fields and means on [0, 1], stds on [0, std_hi]
        y = header + 3 * (th + gap + LINE_H)
        for k, (lo_txt, hi_txt, what) in enumerate((("0", "1", "images, means"),
                                                    ("0", f"{std_hi:.3g}", "std"))):
            x = label_w + gap + k * 2 * (tw + gap)
            bw = 2 * tw
            bar = colormap(np.linspace(0, 1, bw)[None].repeat(8, axis=0))
            img.paste(Image.fromarray(bar), (x, y))
            draw.text((x, y + 10), lo_txt, fill="black", font=fnt)
            draw.text((x + bw - draw.textlength(hi_txt, font=fnt), y + 10), hi_txt, fill="black", font=fnt)
            draw.text((x + bw / 2 - draw.textlength(what, font=fnt) / 2, y + 10), what, fill=GREY, font=fnt)
    return img
