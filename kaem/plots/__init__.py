"""Pictures drawn with Pillow alone: drawing primitives (``drawing``), the learned prior's densities
(``priors``), training curves from log.csv (``curves``), real against generated (``compare``), and
sample grids and PNG files (``images``)."""
from kaem.plots.drawing import LINE_H, Series, canvas, nice_ticks, panel, save_image, wrap_text
from kaem.plots.compare import real_vs_generated
from kaem.plots.curves import CURVE_METRICS, PALETTE, training_curves
from kaem.plots.images import (GRID_TARGET_PX, NonFiniteImages, colormap, grid_scale, image_grid, save_png, save_pngs,
                               save_sample_grid, to_uint8, upscale)
from kaem.plots.priors import (HEADER_H, MIX_COLUMNS, MIX_PANEL_SIZE, PANEL_SIZE, mixture_density_curves,
                               mixture_density_grid, pi0_density_curves, prior_density_curves, prior_density_grid,
                               prior_figure)

__all__ = ["CURVE_METRICS", "GRID_TARGET_PX", "HEADER_H", "LINE_H", "MIX_COLUMNS", "MIX_PANEL_SIZE",
           "NonFiniteImages", "PALETTE", "PANEL_SIZE", "Series", "canvas", "colormap", "grid_scale", "image_grid",
           "mixture_density_curves", "mixture_density_grid", "nice_ticks", "panel", "pi0_density_curves",
           "prior_density_curves", "prior_density_grid", "prior_figure", "real_vs_generated", "save_image",
           "save_png", "save_pngs", "save_sample_grid", "to_uint8", "training_curves", "upscale", "wrap_text"]
