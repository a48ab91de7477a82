"""part1_2a: the optimisation path of one MNIST DNN, eight times, seen through PCA.

The DNN 784-500-50-10 (P = 418,060) is trained 8 times from 8 different seeds,
each with its own shuffling of the minibatches: Adam 1e-3, batch 128, 30
epochs. The eight, times the replicates, train side by side as one stack
(`ctx.train_together`), each exactly as it would train alone. The weights are snapshotted at epoch 0 and
every 3 epochs together with the training loss and accuracy there; each child
run stores its snapshots as one artifact (`snapshots.pt`), which the analysis
projects with one PCA shared by all runs.

The full-set evaluations (train and test loss and accuracy, logged with step =
epoch) are taken at the snapshot epochs only, where the homework reads them:
an evaluation of the 60,000 training images costs about a quarter of an epoch
of this net, so evaluating after every epoch made the experiment ~18 % slower
for numbers no figure shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw1track.config import SWEEP, MnistSplits, setting
from hw1track.measures.snapshots import WeightSnapshots, snapshot_epochs
from hw1track.study.context import Member, RunContext
from hw1track.training.models import MNIST_DNN_WIDTHS, describe, mlp, seeded_model
from hw1track.training.tasks import CLASSIFICATION

DATA = "mnist"

WIDTHS = MNIST_DNN_WIDTHS


@dataclass(frozen=True)
class Config(MnistSplits):
    trainings: int = setting(8, role=SWEEP)
    epochs: int = 30
    snapshot_every: int = 3
    batch_size: int = 128
    lr: float = 1e-3


PRESETS = {
    "full": Config(),
    "quick": Config(epochs=4, snapshot_every=1, train_size=5_000, test_size=2_000),
}


def run(cfg: Config, ctx: RunContext) -> None:
    train, test = ctx.mnist_splits(cfg.train_size, cfg.test_size, cfg.seed)
    epochs = snapshot_epochs(cfg.epochs, cfg.snapshot_every)
    members = {}
    for replicate in ctx.replicates:
        for training in range(cfg.trainings):
            seed = replicate.seed(cfg.seed + training)
            model = seeded_model(lambda: mlp(WIDTHS), seed, ctx.device)
            snapshots = WeightSnapshots(model, epochs)
            members[replicate.name(f"dnn/run{training}")] = Member(
                model, seed, params={"model": "dnn", "widths": describe(WIDTHS), "training": training,
                                     "snapshot_epochs": ",".join(map(str, epochs)), **replicate.params},
                on_epoch=snapshots, log_artifacts=lambda child, _model, snapshots=snapshots: snapshots.log(child))
    # Each training is another seed of the same net: all of them, in every replicate, form one group.
    ctx.train_together(members, train=train, eval_splits={"train": train, "test": test}, task=CLASSIFICATION,
                       epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, per_replicate=("training",),
                       evaluate_at=epochs)
