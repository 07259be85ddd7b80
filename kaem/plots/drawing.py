"""Drawing primitives on Pillow alone (no plotting library): fonts, a white canvas, atomic PNG
writes, data series, round tick values, and framed x/y panels whose lines are clipped to the
frame (dashed or solid, non-finite values breaking a line), plus text wrapping.

    img, draw = canvas(420, 330)
    panel(draw, (0, 0, 420, 330), [Series(xs, ys, kind="scatter")], title="...", fit=(a, b))
    save_image("out.png", img)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from kaem.run.atomic import atomic_open

BLUE = (30, 90, 200)
RED = (200, 60, 60)
GREY = (110, 110, 110)
FILL = (214, 226, 246)

LINE_H = 15  # one line of header text, pixels
GRID_FONT_PX = 12  # text size of every figure (Aileron at 10 px runs its words together)


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
    """The maximal runs of consecutive points with finite coordinates (a non-finite one breaks a line)."""
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


def _finite_runs_flat(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points with finite coordinates, in order."""
    return [p for run in _finite_runs(pts) for p in run]


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


def dashed_line(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color: Any, width: int,
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
                    dashed_line(draw, run, s.color, s.width, s.dash)
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


def tick_format(ticks: Sequence[float]) -> str:
    """The fewest decimals (up to 6) at which every tick label shows its value."""
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:])), default=1.0) or 1.0
    for dec in range(7):
        if all(abs(float(f"{v:.{dec}f}") - v) <= 1e-6 * step for v in ticks):
            return "{:.%df}" % dec
    return "{:.3g}"

