"""Pictures: sample grids and PNG files (``images.py``), and figures drawn with Pillow
(``figures.py``): the learned prior densities, training curves, real against generated."""
from kaem.plots.figures import (CURVE_METRICS, HEADER_H, LINE_H, MIX_COLUMNS, MIX_PANEL_SIZE, PALETTE, PANEL_SIZE,
                                Series, canvas, mixture_density_curves, mixture_density_grid, nice_ticks, panel,
                                pi0_density_curves, prior_density_curves, prior_density_grid, prior_figure,
                                real_vs_generated, save_image, training_curves, wrap_text)
from kaem.plots.images import NonFiniteImages, colormap, image_grid, save_png, save_pngs, save_sample_grid, to_uint8

__all__ = ["CURVE_METRICS", "HEADER_H", "LINE_H", "MIX_COLUMNS", "MIX_PANEL_SIZE", "NonFiniteImages", "PALETTE",
           "PANEL_SIZE", "Series", "canvas", "colormap", "image_grid", "mixture_density_curves",
           "mixture_density_grid", "nice_ticks", "panel", "pi0_density_curves", "prior_density_curves",
           "prior_density_grid", "prior_figure", "real_vs_generated", "save_image", "save_png", "save_pngs",
           "save_sample_grid", "to_uint8", "training_curves", "wrap_text"]
