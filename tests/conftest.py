"""Shared fixtures: real MNIST (imported once per session) and a fresh SQLite store per test."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from hw1track import config as configs
from hw1track.stats.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, VERDICTS
from hw1track.study.discovery import get_experiment
from hw1track.study.invocation import run_experiment
from hw1track.tracking.query import StoreReader
from hw1track.tracking.store import Store
from hw1track.training.data import FASHION_MNIST, ROOT_ENV, SOURCE_ENV, load_mnist

REPO = Path(__file__).resolve().parent.parent
# The reference implementations the fast paths are tested against live with the benchmarks that time them.
sys.path.insert(0, str(REPO / "benchmarks"))


def _mnist_source() -> Path:
    candidate = Path(os.environ.get(SOURCE_ENV) or REPO.parent / "shared" / "data" / "mnist")
    if not candidate.is_dir():
        pytest.exit(f"MNIST source folder {candidate} not found: set {SOURCE_ENV}", returncode=2)
    return candidate


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    return _mnist_source()


@pytest.fixture(scope="session")
def fashion_source() -> Path:
    """The Fashion-MNIST folder: $HW1TRACK_FASHION_MNIST_DIR, else the shared copy beside the project."""
    candidate = Path(os.environ.get(FASHION_MNIST.source_env) or REPO.parent / "shared" / "data" / "fashion-mnist")
    if not candidate.is_dir():
        pytest.fail(f"Fashion-MNIST source folder {candidate} not found: set {FASHION_MNIST.source_env}")
    return candidate


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory, mnist_source) -> Path:
    """One imported copy of MNIST for the whole session, shared with CLI subprocesses via the environment."""
    root = tmp_path_factory.mktemp("mnist-root")
    os.environ[ROOT_ENV] = str(root)
    os.environ[SOURCE_ENV] = str(mnist_source)
    load_mnist(root, mnist_source)
    return root


@pytest.fixture
def store_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def reader(store_uri) -> StoreReader:
    return StoreReader(store_uri)


def run_quick(name: str, store_uri: str, *overrides: str, preset: str = "quick",
              seeds: int | None = None) -> str:
    """Run experiment `name` in-process on the CPU, `seeds` replicates (the preset's default if None); the parent's id."""
    experiment = get_experiment(name)
    config = configs.resolve(experiment.presets, preset, overrides)
    return run_experiment(experiment, preset, config, Store(store_uri), torch.device("cpu"), seeds=seeds)


def hw1track(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """The command line in a fresh process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hw1track.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_claim(claim, n_seeds: int, direction: int = +1) -> None:
    """Every field claims.json promises is there, and the verdict is the one its interval reads in `direction`."""
    record = claim.as_dict()
    assert {"id", "statement", "effect", "effect_name", "ci_low", "ci_high", "n_seeds", "verdict"} <= set(record)
    assert claim.statement and claim.effect_name and claim.method and claim.detail
    assert claim.n_seeds == n_seeds and not math.isnan(claim.effect) and claim.verdict in VERDICTS
    if math.isnan(claim.ci_low):  # one seed, or seeds that agree exactly: no interval, no verdict
        assert claim.verdict == INCONCLUSIVE and math.isnan(claim.ci_high)
        return
    above, below = claim.ci_low > 0, claim.ci_high < 0
    predicted, contradicted = (above, below) if direction > 0 else (below, above)
    assert claim.verdict == (SUPPORTED if predicted else NOT_SUPPORTED if contradicted else INCONCLUSIVE)
    assert claim.ci_low <= claim.effect <= claim.ci_high and "Student t" in claim.method


def check_figures_name_the_image_set(figures: dict, image_set: str = "MNIST") -> None:
    """Each figure says which images it is about, in its suptitle or a panel's title: runs on two image sets
    share one store, and a figure saved on its own must not be taken for the other set's."""
    for name, figure in figures.items():
        titles = [figure.get_suptitle(), *(ax.get_title() for ax in figure.axes)]
        assert any(image_set in title for title in titles), (name, titles)
        assert image_set != "MNIST" or not any("Fashion-MNIST" in title for title in titles), (name, titles)


@pytest.fixture(autouse=True)
def closed_figures():
    """Figures a test draws are closed after it: pyplot keeps every open figure alive for the whole session."""
    yield
    plt.close("all")
