"""part1_3c_i: flatness by interpolation between a small-batch and a large-batch solution, and around each.

One MLP 784-128-64-10 (P = 109,386) is trained on MNIST with Adam 1e-3 for the
same number of epochs, once with batch size 64 (θ₁) and once with 1000 (θ₂),
from the same initial weights and with the same shuffling seed: the batch size
is the only difference. The weights θ(α) = (1−α)·θ₁ + α·θ₂ are then evaluated,
never trained, on the full train and test sets for α from −1 to 2 in steps of
0.05; α = 0 and α = 1 are the two trained models exactly.

Two models that share their initial weights may lie in one basin for that
reason alone. So each replicate also trains θ₂′: batch 1000 again, from a seed
of its own (model number 1: its own initial weights and data order, a seed no
other model of the invocation has, see `study.replicates`), and interpolates
θ₁ → θ₂′ on the same α grid. The two curves share their α = 0 model and their
α = 1 models differ only in where they started, so a barrier on one curve and
not on the other comes from the initialisation. The child param `pair` is the
pair a model was trained for (`shared_init` for θ₁ and θ₂, `independent_init`
for θ₂′; θ₁ is the α = 0 end of both curves), and `interpolation_alpha` its α.

The curves are the parent's artifact `interpolation.csv`, one per replicate and
pair (columns `replicate` and `pair`), logged through `ctx.log_replicate_table`
so that replicates trained as separate tasks add up to one table.

Around θ₁ and θ₂ of replicate 0 (one picture per solution; more seeds would
only repeat it) the training loss is drawn on a plane of two random Gaussian
directions, filter-normalised to each solution's weights after Li et al.
(2018), see `measures.loss_surface`: a (2·surface_steps + 1)² grid with
coordinates from −surface_span to surface_span, evaluated on surface_examples
training examples drawn once from the invocation's seed, and the directions
drawn from that seed too, so the two surfaces differ only by their solutions.
They are the parent's artifact `loss_surface.csv` (columns `solution`,
`batch_size`, `replicate`, `pair`, `examples`, `x`, `y`, `train_loss`,
`train_acc`). The surface settings change only the parent's measurement.

CPU cost: user + sys time of all threads (`getrusage`, `time.process_time`)
with one intra-op thread, which, unlike wall time, a second job on the cores
barely moves. Measured:

- a whole quick invocation (2 seeds): 6.7 s before the second pair and the
  surfaces, 7.9 s after (the smaller of two runs each): +1.3 s;
- of which one 21 × 21 surface on 300 examples: 0.44 s (on 2,000: 2.7 s);
  θ₂′ of both replicates, added to the batch-1000 stack: 0.48 s;
- one curve of 61 α on the quick preset's 8,000 examples: 1.56 s, so the second
  pair's curves would have added 3.1 s. Quick samples α in steps of 0.1
  instead of 0.05 (31 points, within the homework's step ≤ 0.1), which keeps
  four curves at the cost of the two it had.

Hence quick draws 21 × 21 on 300 examples. `full` keeps the recipe and the α
step, and draws 31 × 31 on 2,000 examples. Scaled by the work from the same
measurements (upper estimates), full adds about
2 × 6 s for the surfaces, 3 × 14 s for the second pair's curves and 3 × 15 s for
the θ₂′ trainings (3 seeds): under two minutes of one core. A finer grid costs
in proportion to its points (41 × 41: 2 × 10 s) and adds little to contours of a
surface this smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from hw1track.config import PRESENTATION, SWEEP, MnistSplits, setting
from hw1track.measures.interpolation import alpha_grid, evaluate_along_line, snapshot
from hw1track.measures.loss_surface import evaluate_plane, filter_normalized_directions, plane_coordinates, \
    trained_weights
from hw1track.study.context import Member, RunContext
from hw1track.study.replicates import Replicate
from hw1track.tracking.names import INDEPENDENT_INIT, LOSS_SURFACE_ARTIFACT, PARAM_PAIR, PARAM_REPLICATE, \
    SHARED_INIT
from hw1track.training.data import subset
from hw1track.training.models import describe, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION, Split

DATA = "mnist"

MODEL = (784, 128, 64, 10)
CURVE_COLUMNS = ["alpha", "train_loss", "test_loss", "train_acc", "test_acc", PARAM_REPLICATE, PARAM_PAIR]
SURFACE_COLUMNS = ["solution", "batch_size", PARAM_REPLICATE, PARAM_PAIR, "examples", "x", "y", "train_loss",
                   "train_acc"]
SURFACE_REPLICATE = Replicate(0)


@dataclass(frozen=True)
class Endpoint:
    """One trained model of a replicate: its pair, its α on that pair's curve, and its seed's model number."""

    pair: str
    alpha: int
    number: int  # added to the invocation's seed: models of different numbers start from different weights


THETA_1 = Endpoint(SHARED_INIT, 0, 0)  # batch 64; also the α = 0 end of the independent pair's curve
THETA_2 = Endpoint(SHARED_INIT, 1, 0)  # batch 1000 from θ₁'s initial weights and data order
THETA_2_OWN = Endpoint(INDEPENDENT_INIT, 1, 1)  # batch 1000 from a seed of its own
CURVES = {SHARED_INIT: (THETA_1, THETA_2), INDEPENDENT_INIT: (THETA_1, THETA_2_OWN)}
# Models of one batch size train side by side, every replicate's in one stack: at batch 64 a step is mostly overhead.
STACKS = ((THETA_1,), (THETA_2, THETA_2_OWN))

Trained = dict[tuple[Replicate, Endpoint], dict[str, torch.Tensor]]  # final weights of each replicate's endpoints


@dataclass(frozen=True)
class Config(MnistSplits):
    # each is the batch size of one model, which carries it in its params
    small_batch: int = setting(64, role=SWEEP)
    large_batch: int = setting(1000, role=SWEEP)
    epochs: int = 20
    lr: float = 1e-3
    # the interpolation grid: only the parent's curve depends on it, never a trained model
    alpha_start: float = setting(-1.0, allow_any=True, role=PRESENTATION)
    alpha_stop: float = setting(2.0, allow_any=True, role=PRESENTATION)
    alphas_per_unit: int = setting(20, role=PRESENTATION)  # α step 1/20 = 0.05
    # the loss surfaces: only the parent's measurement depends on them, never a trained model
    surface_span: float = setting(1.0, role=PRESENTATION)  # coordinates from −span to span on each direction
    surface_steps: int = setting(15, role=PRESENTATION)  # steps each side of the solution: a 31 × 31 grid
    surface_examples: int = setting(2_000, role=PRESENTATION)  # the fixed training subset it is evaluated on


PRESETS = {
    "full": Config(),
    # the cost of each setting is measured in the module docstring
    "quick": Config(epochs=3, train_size=6_000, test_size=2_000, alphas_per_unit=10, surface_steps=10,
                    surface_examples=300),
}


def run(cfg: Config, ctx: RunContext) -> None:
    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    splits = {"train": train, "test": test}
    trained = train_endpoints(cfg, ctx, splits)
    log_curves(cfg, ctx, trained, splits)
    if SURFACE_REPLICATE in ctx.replicates:
        log_surfaces(cfg, ctx, trained, train)


def train_endpoints(cfg: Config, ctx: RunContext, splits: dict[str, Split]) -> Trained:
    """Train every replicate's θ₁, θ₂ and θ₂′; their final weights by (replicate, endpoint)."""
    batch_sizes = {THETA_1: cfg.small_batch, THETA_2: cfg.large_batch, THETA_2_OWN: cfg.large_batch}
    trained = {}
    for stack in STACKS:
        batch_size = batch_sizes[stack[0]]
        members = {(replicate, endpoint): member(cfg, ctx, replicate, endpoint)
                   for replicate in ctx.replicates for endpoint in stack}
        ctx.train_together({replicate.name(run_name(batch_size, endpoint)): trainee
                            for (replicate, endpoint), trainee in members.items()},
                           train=splits["train"], eval_splits=splits, task=CLASSIFICATION, epochs=cfg.epochs,
                           batch_size=batch_size, lr=cfg.lr)
        trained.update({key: snapshot(trainee.model) for key, trainee in members.items()})
    return trained


def member(cfg: Config, ctx: RunContext, replicate: Replicate, endpoint: Endpoint) -> Member:
    """The untrained model of `endpoint` in `replicate`, seeded by its model number, with the params it is logged by."""
    seed = replicate.seed(cfg.seed + endpoint.number)
    return Member(seeded_model(lambda: mlp(MODEL), seed, ctx.device), seed,
                  params={"widths": describe(MODEL), "interpolation_alpha": endpoint.alpha, PARAM_PAIR: endpoint.pair,
                          **replicate.params})


def run_name(batch_size: int, endpoint: Endpoint) -> str:
    """'bs64', 'bs1000', and 'bs1000-independent-init' for θ₂′, as before the second pair existed for the others."""
    return f"bs{batch_size}" + ("-independent-init" if endpoint.pair == INDEPENDENT_INIT else "")


def log_curves(cfg: Config, ctx: RunContext, trained: Trained, splits: dict[str, Split]) -> None:
    """Both pairs' curves for every replicate, as one table with columns `replicate` and `pair`."""
    alphas = alpha_grid(cfg.alpha_start, cfg.alpha_stop, cfg.alphas_per_unit)
    rows = []
    for replicate in ctx.replicates:
        for pair, (start, end) in CURVES.items():
            curve = evaluate_along_line(mlp(MODEL).to(ctx.device), trained[replicate, start], trained[replicate, end],
                                        alphas, splits, CLASSIFICATION)
            rows.extend({**row, **replicate.params, PARAM_PAIR: pair} for row in curve)
    ctx.log_replicate_table("interpolation.csv", pd.DataFrame(rows, columns=CURVE_COLUMNS))
    ctx.report(f"interpolation: {len(alphas)} values of α from {alphas[0]} to {alphas[-1]}, pairs "
               f"{', '.join(CURVES)}, {len(ctx.replicates)} replicate(s)")


def log_surfaces(cfg: Config, ctx: RunContext, trained: Trained, train: Split) -> None:
    """The training loss on a filter-normalised plane around θ₁ and θ₂ of `SURFACE_REPLICATE`, as one table."""
    examples = subset(*train, cfg.surface_examples, cfg.seed)  # the same examples for both solutions
    coordinates = plane_coordinates(cfg.surface_span, cfg.surface_steps)
    frames = []
    for endpoint, batch_size in ((THETA_1, cfg.small_batch), (THETA_2, cfg.large_batch)):
        frame = surface(trained[SURFACE_REPLICATE, endpoint], ctx.device, coordinates, examples, cfg.seed).assign(
            solution=run_name(batch_size, endpoint), batch_size=min(batch_size, len(train[0])),  # the child's param
            examples=len(examples[0]), **SURFACE_REPLICATE.params, **{PARAM_PAIR: endpoint.pair})
        frames.append(frame[SURFACE_COLUMNS])
        at_solution = frame[(frame.x == 0) & (frame.y == 0)].train_loss.iloc[0]
        ctx.report(f"loss surface around {run_name(batch_size, endpoint)}: {len(coordinates)}×{len(coordinates)} "
                   f"points on {len(examples[0])} training examples, train loss {at_solution:.4g} at the solution, "
                   f"{frame.train_loss.max():.4g} at most")
    ctx.parent.log_csv(pd.concat(frames, ignore_index=True), LOSS_SURFACE_ARTIFACT)


def surface(state: dict[str, torch.Tensor], device: torch.device, coordinates: list[float], examples: Split,
            seed: int) -> pd.DataFrame:
    """Columns x, y, train_loss, train_acc around the weights `state`, on directions drawn from `seed`.

    Every solution gets the same Gaussian draws, each normalised to its own
    weights, so two surfaces differ by their solutions, not by their luck.
    """
    model = mlp(MODEL).to(device)
    model.load_state_dict(state)
    weights = trained_weights(model)
    directions = filter_normalized_directions(weights, torch.Generator().manual_seed(seed))
    return pd.DataFrame(evaluate_plane(model, weights, directions, coordinates, {"train": examples}, CLASSIFICATION))
