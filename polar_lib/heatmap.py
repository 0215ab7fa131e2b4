"""The PoLAR paper's direction heatmap: pairwise distances between normalised rows of ΔW
(``spectra.direction_distances``) shown in average-linkage order."""
from __future__ import annotations

import numpy as np

from .spectra import DirectionDistances

__all__ = ["plot_direction_heatmap"]


def plot_direction_heatmap(result: DirectionDistances | np.ndarray, order=None, *, ax=None, title: str | None = None,
                           cmap: str = "viridis", colorbar: bool = True):
    """Show the distance matrix in average-linkage order: ``imshow``, vmin 0, vmax 2 (as the PoLAR paper).

    result: a ``DirectionDistances`` (its order is used) or a square distance array with an
    optional ``order``. Dark diagonal blocks are collapsed directions. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if isinstance(result, DirectionDistances):
        distances, order = result.distances, result.order if order is None else order
    else:
        distances = np.asarray(result)
    if order is not None:
        distances = distances[np.ix_(order, order)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    image = ax.imshow(distances, vmin=0.0, vmax=2.0, cmap=cmap, interpolation="nearest")
    ax.set_xlabel("row $i$ (linkage order)")
    ax.set_ylabel("row $j$ (linkage order)")
    if title:
        ax.set_title(title, wrap=True)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=r"$\|\tilde w_i - \tilde w_j\|$")
    return ax
