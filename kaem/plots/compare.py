"""Real against generated: rows of data and samples, and their per-pixel mean and standard
deviation."""
from __future__ import annotations

import numpy as np
from PIL import Image

from kaem.plots.drawing import GREY, GRID_FONT_PX, LINE_H, canvas, font
from kaem.plots.images import colormap, to_uint8


def real_vs_generated(real: np.ndarray, generated: np.ndarray, n_show: int = 8, title: str = "",
                      tile_px: int = 96) -> Image.Image:
    """A figure comparing data with samples, both host arrays (N, C, H, W) in [0, 1]: a row of
    the first ``n_show`` real images, a row of generated ones, and the per-pixel mean and
    standard deviation over all N of each (what a model that matches the data reproduces).
    One-channel data (fields such as Darcy's u) are drawn in false colour (viridis) on one
    shared scale: [0, 1] for images and means, [0, largest std] for the stds; colour bars
    below say which. RGB data are drawn as they are (std: grey, scaled to the largest).
    """

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
