"""Figures of the learned prior: the normalised densities π_{q,p}(z) = exp(f_{q,p}(z)) π0(z) / Z_{q,p}
of the univariate prior, one panel per (q, p), and for the mixture prior each π_q = Σ_p α_{q,p} π_{q,p}
with its weighted components; ``prior_figure`` picks the figure of a prior's kind.

    save_image("prior.png", prior_density_grid(model.prior))   # first 8 q x first 5 p
    save_image("prior.png", prior_figure(model.prior))         # the grid of the prior's kind

The curves are computed on the prior's device and copied to the host with ``to_numpy``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from kaem.backend import to_numpy
from kaem.plots.drawing import (BLUE, FILL, GREY, GRID_FONT_PX, LINE_H, Series, canvas, font, nice_ticks, panel,
                               tick_format, wrap_text)

DEFAULT_QS = 8  # prior_density_grid without qs: the first 8 q ...
DEFAULT_PS = 5  # ... and the first 5 p
PANEL_SIZE = (200, 134)  # one density panel, pixels (width, height)
HEADER_H = 6 + 2 * LINE_H  # the header above the density panels: two lines, more if it must wrap


def _select(kind: str, idx: Sequence[int] | None, size: int, default: int) -> list[int]:
    """The given 0-based indices checked against ``size`` (ValueError naming the valid range), or
    the first ``default`` when none are given."""
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
          xfmt="{:g}", yfmt=tick_format(yt), pad=(38, 8, 19, 20), title_y=2, fnt=fnt)


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


def _ranges(idx: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(out)

