"""matplotlib pictures: every function takes ``ax=``, returns the Axes and never calls
``plt.show()``.

``weights`` draws one checkpoint (histograms, the overview, heatmaps, kernel grids);
``diffs`` draws a diff or a divergence report; ``adapters`` a LoRA adapter's check and one
module's ΔW; ``images`` turns tensors into arrays to draw
(block means, kernel tiles), shared with the widgets.
"""
from .adapters import adapter_overview, delta_panels
from .diffs import diff_hist, diff_overview, divergence_plot
from .images import diverging_limit, heatmap_image, kernel_grid_image, select
from .weights import DIVERGING, FINE_BINS, PROBLEM_FLAGS, heatmap, hist, kernel_grid, plot_overview

__all__ = ["DIVERGING", "FINE_BINS", "PROBLEM_FLAGS", "adapter_overview", "delta_panels", "diff_hist", "diff_overview", "divergence_plot",
           "diverging_limit", "heatmap", "heatmap_image", "hist", "kernel_grid", "kernel_grid_image",
           "plot_overview", "select"]
