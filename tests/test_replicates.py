"""Replicates: N seeds of every configuration, told apart by their params, gathered by their group tag, and extended
incrementally: a run with more seeds trains only the replicates that are new."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch
from conftest import hw1track
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from test_reliability import TINY

from hw1track import config as configs
from hw1track.study.discovery import get_experiment
from hw1track.study.invocation import run_experiment
from hw1track.study.replicates import SEED_STRIDE
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.names import TAG_GROUP
from hw1track.tracking.query import by_group, replicate
from hw1track.tracking.store import Store
from hw1track.training.fit import fit
from hw1track.training.models import mlp, seeded_model
from hw1track.training.targets import sample_target
from hw1track.training.tasks import REGRESSION
from runs import part1_1a


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "replicate-tests")


def _run(name: str, store_uri: str, seeds: int, *overrides: str) -> str:
    experiment = get_experiment(name)
    config = configs.resolve(experiment.presets, "quick", overrides)
    return run_experiment(experiment, "quick", config, Store(store_uri), torch.device("cpu"), threads=1, reuse=True,
                          seeds=seeds)


def _check_groups(children: list, seeds: int) -> None:
    """Every group holds each replicate equally often, with seeds of its own; configurations are separate groups."""
    for runs in by_group(children).values():
        per_replicate = Counter(replicate(run) for run in runs)
        assert set(per_replicate) == set(range(seeds)) and len(set(per_replicate.values())) == 1, per_replicate
        assert len({run.data.params["seed"] for run in runs}) == len(runs)
        for run in runs:  # replicate r of a model seeded s trains with s + r * SEED_STRIDE
            assert int(run.data.params["seed"]) // SEED_STRIDE == replicate(run)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_more_seeds_train_only_the_new_replicates(name, store_uri, reader):
    first = reader.client.get_run(_run(name, store_uri, 1, *TINY[name]))
    assert first.data.params["seeds"] == "1"
    originals = reader.children(first)
    assert {replicate(run) for run in originals} == {0}

    second = reader.client.get_run(_run(name, store_uri, 2, *TINY[name]))
    assert second.data.params["seeds"] == "2" and second.info.run_id != first.info.run_id
    children = reader.children(second)
    trained = [run for run in children if run.data.tags[MLFLOW_PARENT_RUN_ID] == second.info.run_id]
    assert len(children) == 2 * len(originals)
    assert {replicate(run) for run in trained} == {1} and len(trained) == len(originals)  # replicate 0 was reused
    assert {run.info.run_id for run in originals} <= {run.info.run_id for run in children}
    assert len(by_group(children)) == len(by_group(originals))
    _check_groups(children, seeds=2)


def test_the_group_tag_gathers_one_configuration_and_separates_the_others(store_uri, reader):
    parent = reader.client.get_run(_run("part1_1a", store_uri, 3, "epochs=5"))
    children = reader.children(parent)
    groups = by_group(children)
    assert len(children) == 3 * 6 and len(groups) == 6
    for runs in groups.values():
        assert len({(run.data.params["target"], run.data.params["widths"]) for run in runs}) == 1
        assert sorted(run.info.run_name for run in runs)[1:] == [f"{runs[0].info.run_name}#{r}" for r in (1, 2)]
    assert len({frozenset(run.data.tags[TAG_GROUP] for run in runs) for runs in groups.values()}) == 6
    _check_groups(children, seeds=3)


def test_one_seed_trains_each_model_alone_number_for_number(store_uri, reader):
    """With one replicate, a net of a stacked path trains as `fit` trains it alone: the single-seed study's numbers."""
    parent = reader.client.get_run(_run("part1_1a", store_uri, 1, "epochs=25", "targets=sinc"))
    x, y = sample_target("sinc", part1_1a.Config().n_points)
    for m, (name, widths) in enumerate(part1_1a.MODELS.items()):
        (child,) = [run for run in reader.children(parent) if run.info.run_name == f"sinc/{name}"]
        assert int(child.data.params["seed"]) == m  # the seed a model had before replicates existed

        class Losses:
            values: list[float] = []

            def log_metrics(self, metrics, step):
                self.values.append(metrics["train_loss"])

        sink = Losses()
        sink.values = []
        fit(seeded_model(lambda: mlp(widths), m), (x, y), task=REGRESSION, epochs=25, batch_size=len(x), lr=1e-3,
            seed=m, eval_splits={"train": (x, y)}, sink=sink)
        logged = [metric.value for metric in reader.client.get_metric_history(child.info.run_id, "train_loss")]
        assert logged == sink.values


def test_the_command_line_trains_the_presets_seeds_and_refuses_a_bad_count(tmp_path):
    done = hw1track("run", "part1_1a", "--set", "epochs=3", "--set", "targets=sinc", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from hw1track.tracking.query import StoreReader

    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = reader.latest_parent("part1_1a")
    assert parent.data.params["seeds"] == "2"  # the quick preset's default
    names = defaultdict(list)
    for run in reader.children(parent):
        names[replicate(run)].append(run.info.run_name)
    assert names == {0: ["sinc/deep", "sinc/middle", "sinc/shallow"],
                     1: ["sinc/deep#1", "sinc/middle#1", "sinc/shallow#1"]}

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = hw1track("run", "part1_1a", "--seeds", "0", cwd=empty)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--seeds" in refused.stderr
    assert "Traceback" not in refused.stderr and list(empty.iterdir()) == []
