"""Line plots of the evaluation reports (matplotlib, Agg backend, imported lazily)."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def line_plot(path: Path, series, xlabel: str, ylabel: str, title: str,
              figsize=(6.4, 3.8)) -> Path:
    """``series``: [(x, y, label, plot keyword arguments)] drawn on one axis, saved as
    ``path`` (png) with a grid and a small legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    for x, y, label, style in series:
        ax.plot(x, y, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
