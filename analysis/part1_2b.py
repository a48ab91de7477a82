"""part1_2b figures: loss and gradient norm at every iteration, one figure per model."""

from __future__ import annotations

from mlflow.entities import Run

from hw1track.reporting.plotting import subplots
from hw1track.tracking.query import StoreReader

# Minibatch values scatter with the sampled batch; a running mean over about 1 % of the
# iterations shows the trend. Full-batch values are the exact quantities and are drawn as they are.
SMOOTHING_FRACTION = 0.01
MIN_WINDOW = 5


def _panel(ax, series, color: str, label: str, smooth: bool) -> None:
    window = round(len(series) * SMOOTHING_FRACTION)
    smooth = smooth and window >= MIN_WINDOW
    ax.plot(series.step, series.value, color=color, linewidth=0.5 if smooth else 0.8, alpha=0.5 if smooth else 1.0,
            label=f"{label} at each iteration")
    if smooth:
        trend = series.value.rolling(window, center=True, min_periods=1).mean()
        ax.plot(series.step, trend, color=color, linewidth=1.5, label=f"running mean over {window} iterations")
    ax.set_yscale("log")
    ax.legend(loc="upper right")


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    history = reader.history(children, ["loss", "grad_norm"])
    figures = {}
    for run in children:
        params = run.data.params
        mine = history[history.run_id == run.info.run_id]
        loss, grad_norm = (mine[mine.key == key] for key in ("loss", "grad_norm"))
        full_batch = int(params["batch_size"]) >= int(params["n_train"])
        loss_name = "training MSE" if params["data"] == "sinc" else "cross-entropy"
        batch = "full-batch" if full_batch else f"minibatch of {params['batch_size']}"

        fig, (top, bottom) = subplots(2, 1, width=8.0, height=3.2, sharex=True)
        _panel(top, loss, "tab:blue", "loss", smooth=not full_batch)
        top.set(ylabel=f"{loss_name} (log scale)",
                title=f"{params['data']}: DNN {params['widths']} (P={params['n_params']}), Adam lr={params['lr']}, "
                      f"{batch}\nloss and gradient norm of every update")
        _panel(bottom, grad_norm, "tab:red", "‖∇L‖", smooth=not full_batch)
        bottom.set(xlabel="iteration (parameter update)", ylabel="gradient norm ‖∇L‖₂ (log scale)")
        figures[f"grad_norm_{params['data']}"] = fig
    return figures
