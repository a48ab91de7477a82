"""part1_2b figures: loss and gradient norm at every iteration, one figure per model.

With several replicates each panel shows their (geometric) mean and 95 % band,
so a spike or plateau can be told apart from one seed's accident.
"""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run

from hw1track.reporting.plotting import dataset_title, limit_to_lines, plot_band, seeds_text, subplots
from hw1track.tracking.query import StoreReader, by_group

# Minibatch values scatter with the sampled batch; a running mean over about 1 % of the
# iterations shows the trend. Full-batch values are the exact quantities and are drawn as they are.
SMOOTHING_FRACTION = 0.01
MIN_WINDOW = 5


def _trends(series: pd.DataFrame, window: int) -> pd.DataFrame:
    """Each replicate's running mean, shaped like a metric history so that the band is taken over trends.

    A band over the raw minibatch values would mostly measure the batch
    sampling at each iteration; the seeds' disagreement shows in their trends.
    """
    ordered = series.sort_values(["run_id", "step"], kind="stable")
    trend = ordered.groupby("run_id").value.transform(
        lambda one: one.rolling(window, center=True, min_periods=1).mean())
    return ordered.assign(value=trend, key="trend")


def _panel(ax, history: pd.DataFrame, key: str, run_ids: list[str], color: str, label: str, smooth: bool) -> None:
    series = history[(history.key == key) & history.run_id.isin(run_ids)]
    longest = series.groupby("run_id").size().max()
    window = round(longest * SMOOTHING_FRACTION)
    smooth = smooth and window >= MIN_WINDOW
    if smooth:
        for i, (_, one) in enumerate(series.groupby("run_id", sort=False)):
            ax.plot(one.step, one.value, color=color, linewidth=0.5, alpha=0.5 / len(run_ids) ** 0.5,
                    label=f"{label} at each iteration" if i == 0 else None)
        plot_band(ax, _trends(series, window), "trend", run_ids, color=color, log=True,
                  label=f"running mean over {window} iterations")
    else:
        plot_band(ax, series, key, run_ids, color=color, log=True, thin=True, label=f"{label} at each iteration")
    ax.set_yscale("log")
    limit_to_lines(ax)
    ax.legend(loc="upper right")


def _trained_on(run: Run) -> str:
    """sinc, or the image set the DNN trained on (its `data` param says only that it was images)."""
    return run.data.params["data"] if run.data.params["data"] == "sinc" else dataset_title(run)


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["loss", "grad_norm"])
    figures = {}
    for runs in by_group(children).values():
        params = runs[0].data.params
        run_ids = [run.info.run_id for run in runs]
        full_batch = int(params["batch_size"]) >= int(params["n_train"])
        loss_name = "training MSE" if params["data"] == "sinc" else "cross-entropy"
        batch = "full-batch" if full_batch else f"minibatch of {params['batch_size']}"

        fig, (top, bottom) = subplots(2, 1, width=8.0, height=3.2, sharex=True)
        _panel(top, history, "loss", run_ids, "tab:blue", "loss", smooth=not full_batch)
        top.set(ylabel=f"{loss_name} (log scale)",
                title=f"{_trained_on(runs[0])}: DNN {params['widths']} (P={params['n_params']}), "
                      f"Adam lr={params['lr']}, {batch}\n"
                      f"loss and gradient norm of every update, {seeds_text(len(runs))}")
        _panel(bottom, history, "grad_norm", run_ids, "tab:red", "‖∇L‖", smooth=not full_batch)
        bottom.set(xlabel="iteration (parameter update)", ylabel="gradient norm ‖∇L‖₂ (log scale)")
        figures[f"grad_norm_{params['data']}"] = fig
    return figures
