"""part1_2a figures: the 8 optimisation paths projected on one shared PCA plane, per view of the weights.

Logs the explained-variance ratio of the two axes of each view to the parent run
(`pca_whole_explained_var_1`, ..., `pca_layer1_explained_var_2`). With several
replicates every one of the 8×N paths is drawn in the same plane (the PCA is
fitted on all of them), coloured by training index and marked by replicate;
only each path's last point then carries its accuracy, since a label on every
snapshot of 8×N paths would bury the paths.
"""

from __future__ import annotations

import tempfile

from matplotlib.lines import Line2D
from mlflow.entities import Run

from hw1track.measures.pca import JointProjection, project_jointly
from hw1track.measures.snapshots import ARTIFACT, load_snapshots
from hw1track.reporting.plotting import dataset_title, run_colors, seeds_text, subplots
from hw1track.tracking.query import StoreReader, replicate
from hw1track.tracking.runs import TrackedRun

# Snapshot key -> (metric name part, what the axis title calls it).
VIEWS = {
    "whole": ("whole", "whole model (weights and biases)"),
    "first_layer": ("layer1", "first-layer weights"),
}


def load_trajectories(reader: StoreReader, children: list[Run]) -> list[dict]:
    """Every child's snapshots, in memory (the downloaded files are deleted again)."""
    with tempfile.TemporaryDirectory(prefix="hw1track-snapshots-") as folder:
        return [load_snapshots(reader.download(run, ARTIFACT, f"{folder}/{run.info.run_id}")) for run in children]


def project_view(trajectories: list[dict], view: str) -> JointProjection:
    """One PCA over the snapshots of all runs in `view` ('whole' or 'first_layer')."""
    return project_jointly([snapshots[view].numpy() for snapshots in trajectories])


# One marker and line style per replicate, so that paths of one colour (one training index) stay apart.
REPLICATE_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--"), ("*", ":")]


def _draw(children: list[Run], trajectories: list[dict], projection: JointProjection, title: str):
    replicates = sorted({replicate(run) for run in children})
    if len(replicates) == 1:
        return _draw_one_replicate(children, trajectories, projection, title)
    fig, ax = subplots(width=8.5, height=6.5)
    trainings = [_training(run, i) for i, run in enumerate(children)]
    colors = run_colors(sorted(set(trainings)))
    for run, training, snapshots, points in zip(children, trainings, trajectories, projection.points):
        color = colors[training]
        marker, linestyle = REPLICATE_STYLES[replicates.index(replicate(run)) % len(REPLICATE_STYLES)]
        ax.plot(points[:, 0], points[:, 1], color=color, linestyle=linestyle, linewidth=0.8, alpha=0.6)
        ax.scatter(points[:, 0], points[:, 1], color=color, marker=marker, s=16, zorder=3)
        ax.scatter(points[0, 0], points[0, 1], facecolor="white", edgecolor=color, marker=marker, s=40, zorder=4)
        accuracy = snapshots["train_acc"].tolist()[-1]
        ax.annotate(f"{100 * accuracy:.1f}", tuple(points[-1]), textcoords="offset points", xytext=(3, 3),
                    fontsize=6, color=color)
    handles = [Line2D([], [], color=colors[training], marker="o", linestyle="-", label=f"training {training}")
               for training in sorted(colors)]
    handles += [Line2D([], [], color="grey", marker=marker, linestyle=linestyle, label=f"replicate {index}")
                for index, (marker, linestyle) in zip(replicates, REPLICATE_STYLES)]
    ratio = projection.explained_variance_ratio
    epochs = trajectories[0]["epoch"].tolist()
    ax.set(xlabel=f"PC 1 ({ratio[0]:.1%} of variance)", ylabel=f"PC 2 ({ratio[1]:.1%} of variance)",
           title=f"{dataset_title(children[0])} DNN {children[0].data.params['widths']} optimisation paths: {title}\n"
                 f"{len(set(trainings))} trainings × {seeds_text(len(replicates))} = {len(children)} paths, "
                 f"one PCA fitted on all their snapshots, epochs {epochs[0]} to {epochs[-1]}\n"
                 f"(hollow = epoch 0; label = training accuracy in % at the last epoch)")
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    return fig


def _training(run: Run, position: int) -> int:
    """The training index within its replicate (runs from before replicates: their position)."""
    return int(run.data.params.get("training", position))


def _draw_one_replicate(children: list[Run], trajectories: list[dict], projection: JointProjection, title: str):
    """The single-seed figure: every snapshot labelled, one legend entry per run with its seed."""
    fig, ax = subplots(width=7.5, height=6.5)
    colors = run_colors([run.info.run_id for run in children])
    for run, snapshots, points in zip(children, trajectories, projection.points):
        color = colors[run.info.run_id]
        ax.plot(points[:, 0], points[:, 1], color=color, linewidth=0.8, alpha=0.6)
        ax.scatter(points[:, 0], points[:, 1], color=color, s=18, zorder=3,
                   label=f"{run.data.params['model']} (seed {run.data.params['seed']})")
        ax.scatter(points[0, 0], points[0, 1], facecolor="white", edgecolor=color, s=45, zorder=4)
        for (x, y), accuracy in zip(points, snapshots["train_acc"].tolist()):
            ax.annotate(f"{100 * accuracy:.1f}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6,
                        color=color)
    ratio = projection.explained_variance_ratio
    epochs = trajectories[0]["epoch"].tolist()
    ax.set(xlabel=f"PC 1 ({ratio[0]:.1%} of variance)", ylabel=f"PC 2 ({ratio[1]:.1%} of variance)",
           title=f"{dataset_title(children[0])} DNN {children[0].data.params['widths']} optimisation paths: {title}\n"
                 f"one PCA fitted on the snapshots of all {len(children)} runs, epochs {epochs[0]} to {epochs[-1]}\n"
                 f"(hollow = epoch 0; labels = training accuracy in %)")
    ax.legend(fontsize=7, loc="best")
    return fig


def figures(reader: StoreReader, parent: Run) -> dict:
    children = reader.children(parent)
    trajectories = load_trajectories(reader, children)
    figures, metrics = {}, {}
    for view, (metric_name, title) in VIEWS.items():
        projection = project_view(trajectories, view)
        for component, ratio in enumerate(projection.explained_variance_ratio, start=1):
            metrics[f"pca_{metric_name}_explained_var_{component}"] = float(ratio)
        figures[f"pca_{metric_name}"] = _draw(children, trajectories, projection, title)
    tracked = TrackedRun(reader.client, parent.info.run_id)
    tracked.log_metrics(metrics, step=0)
    tracked.flush()
    return figures
