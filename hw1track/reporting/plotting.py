"""Figure conventions shared by every analysis: readable defaults, saving, and logging back to MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hw1track.tracking.runs import TrackedRun  # noqa: E402

plt.rcParams.update({
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "legend.fontsize": 8,
    "figure.constrained_layout.use": True,
})


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 4.0, **kwargs) -> tuple[Figure, object]:
    """A figure sized per panel, so multi-panel figures stay legible."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)


def save_figures(figures: Mapping[str, Figure], folder: Path, parent: TrackedRun | None = None) -> list[Path]:
    """Write each figure as `<folder>/<name>.png` and, given a run, log it under its `figures/` artifacts."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        figure.savefig(path)
        plt.close(figure)
        if parent is not None:
            parent.log_file(path, "figures")
        paths.append(path)
    return paths


def plot_curves(ax, history, key: str, labels: Mapping[str, str], *, linestyle: str = "-",
                colors: Mapping[str, str] | None = None, suffix: str = "") -> None:
    """One line per run of metric `key` from a `StoreReader.history` frame, labelled by run id."""
    for run_id, label in labels.items():
        series = history[(history.run_id == run_id) & (history.key == key)]
        color = colors.get(run_id) if colors else None
        ax.plot(series.step, series.value, linestyle=linestyle, color=color, label=f"{label}{suffix}")


def run_colors(run_ids) -> dict[str, str]:
    """A stable colour per run, shared by every panel of a figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {run_id: cycle[i % len(cycle)] for i, run_id in enumerate(run_ids)}
