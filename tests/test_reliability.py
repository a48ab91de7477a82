"""Interrupted, repeated and concurrent runs, and bad input: nothing lost, nothing trained or counted twice.

Every test drives the real command line (a fresh process) or the real library
against a real SQLite store. The code version is pinned through
HW1TRACK_CODE_VERSION, so that edits to the working tree while the suite runs
cannot change the identity of the models between two invocations of a test.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from conftest import hw1track
from mlflow.entities import ViewType
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hw1track import config as configs
from hw1track.measures.snapshots import ARTIFACT, load_snapshots
from hw1track.study.discovery import discover, experiments_folder, get_experiment
from hw1track.study.invocation import run_experiment
from hw1track.tracking.code_version import ENV as CODE_VERSION_ENV
from hw1track.tracking.code_version import code_version, source_digest, training_source
from hw1track.tracking.identity import config_hash, reused_child_ids
from hw1track.tracking.names import TAG_CONFIG_HASH, TAG_EXPERIMENT, TAG_HOST, TAG_PID, TAG_PROCESS_START, TAG_ROLE
from hw1track.tracking.orphans import find_orphans
from hw1track.tracking.processes import current_process_tags
from hw1track.tracking.provenance import git_commit
from hw1track.tracking.query import StoreReader
from hw1track.tracking.runs import ReusedRun, parent_run
from hw1track.tracking.store import Store

EPOCHS = 1000  # a few seconds per model: long enough to interrupt a sweep between two models
SWEEP = ("run", "part1_1a", "--set", "targets=sinc", "--set", f"epochs={EPOCHS}", "--threads", "1", "--seeds", "1")
SWEEP_MODELS = ["sinc/deep", "sinc/middle", "sinc/shallow"]

# The smallest settings under which each experiment still trains and draws everything.
TINY = {
    "part1_1a": ("epochs=30", "targets=sinc"),
    "part1_1b": ("epochs=1", "train_size=256", "test_size=256"),
    "part1_2a": ("epochs=2", "snapshot_every=1", "trainings=2", "train_size=256", "test_size=256"),
    "part1_2b": ("sinc_iterations=40", "mnist_epochs=1", "train_size=256", "test_size=256"),
    "part1_2c": ("n_trainings=3", "epochs=40", "phase2_steps=10"),
    "part1_3a": ("max_epochs=2", "widths=784,32,10", "train_size=256", "test_size=256"),
    "part1_3b": ("epochs=1", "widths=6,10", "train_size=256", "test_size=256"),
    "part1_3c_i": ("epochs=1", "train_size=256", "test_size=256", "surface_examples=32"),
    "part1_3c_ii": ("epochs=1", "batch_sizes=64,128", "train_size=256", "test_size=256", "sharpness_examples=64",
                    "sharpness_maxiter=2"),
}


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "reliability-tests")  # inherited by the command-line processes


def _run(name: str, store_uri: str, *overrides: str, reuse: bool = True) -> str:
    """One invocation in this process, as `hw1track run` makes it (reusing finished models unless told not to).

    One seed: what these tests interrupt and repeat is an invocation; replicates are tested in test_replicates.py.
    """
    experiment = get_experiment(name)
    config = configs.resolve(experiment.presets, "quick", overrides)
    return run_experiment(experiment, "quick", config, Store(store_uri), torch.device("cpu"), threads=1, reuse=reuse,
                          seeds=1)


def _start(args: tuple[str, ...], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hw1track.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _all_runs(reader: StoreReader, experiment: str) -> list:
    experiment_id = reader.store.experiment_id(experiment)
    if experiment_id is None:
        return []
    return list(reader.client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def _children(runs: list, status: str | None = None) -> list:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) == "child" and status in (None, r.info.status)]


def _own_children(runs: list, parent_id: str) -> list:
    return [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent_id]


def _wait_until(condition, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _mid_sweep(reader: StoreReader, folder: Path) -> bool:
    """A model has finished and the next one is training."""
    if not (folder / "mlflow.db").exists():
        return False
    children = _children(_all_runs(reader, "part1_1a"))
    return any(r.info.status == "FINISHED" for r in children) and any(r.info.status == "RUNNING" for r in children)


def _one_error_line(done: subprocess.CompletedProcess, exit_code: int, message: str) -> None:
    assert done.returncode == exit_code, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hw1track: error:"), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- idempotent sweeps -------------------------------------------------------------------------------------------


def test_a_model_identity_changes_with_preset_code_version_and_seed():
    params = {"model": "dense6", "lr": 1e-3, "n_train": 2000}
    scope = {"preset": "quick", "code_version": "abc", "seed": 0}
    identity = config_hash("part1_3b", params, scope)
    assert identity == config_hash("part1_3b", dict(reversed(params.items())), scope)
    for key, other in [("preset", "full"), ("code_version", "abd"), ("seed", 1)]:
        assert config_hash("part1_3b", params, {**scope, key: other}) != identity
    assert config_hash("part1_3b", {**params, "n_train": 2001}, scope) != identity


def test_the_code_version_is_the_commit_or_the_commit_plus_a_digest_of_the_edited_source(monkeypatch):
    monkeypatch.delenv(CODE_VERSION_ENV)
    commit, experiments = git_commit(), experiments_folder()
    if commit == "unknown":
        assert code_version(experiments).startswith("hw1track-") and "+" in code_version(experiments)
    elif commit.endswith("-dirty"):
        assert code_version(experiments) == f"{commit}+{source_digest(training_source(experiments))}"
    else:
        assert code_version(experiments) == commit
    monkeypatch.setenv(CODE_VERSION_ENV, "v1.2")
    assert code_version(experiments) == "v1.2"


def test_the_source_digest_follows_python_content_only(tmp_path):
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "train.py"
    module.write_text("LR = 1e-3\n")
    before = source_digest([tmp_path / "pkg"])
    module.write_text("LR = 1e-3\n")  # rewritten, same content
    (tmp_path / "pkg" / "notes.md").write_text("not code")
    assert source_digest([tmp_path / "pkg"]) == before
    module.write_text("LR = 1e-2\n")
    assert source_digest([tmp_path / "pkg"]) != before


def test_children_keep_one_finished_run_per_config_the_newest(store_uri, reader):
    with parent_run(Store(store_uri), "unit", "quick", "p", {}) as parent:
        for attempt in (1.0, 2.0):
            with parent.child("c", {"seed": 0}) as child:
                child.log_metrics({"train_loss": attempt}, step=0)
        with parent.child("d", {"seed": 1}):
            pass
    children = reader.children(reader.client.get_run(parent.run_id))
    assert [c.info.run_name for c in children] == ["c", "d"]
    assert children[0].data.metrics["train_loss"] == 2.0


def test_a_reusing_parent_links_finished_children_and_readers_follow_the_links(store_uri, reader):
    store, scope = Store(store_uri), {"preset": "quick", "code_version": "v1", "seed": 0}
    with parent_run(store, "unit", "quick", "first", {}, scope=scope, reuse=True) as first:
        with first.child("c", {"seed": 0}) as finished:
            finished.log_metrics({"train_loss": 0.5}, step=0)
        with pytest.raises(RuntimeError):
            with first.child("d", {"seed": 1}):
                raise RuntimeError("interrupted")
    with parent_run(store, "unit", "quick", "second", {}, scope=scope, reuse=True) as second:
        with second.child("c", {"seed": 0}) as reused:
            assert not hasattr(reused, "log_metrics")  # already there: it cannot be logged twice
        with second.child("d", {"seed": 1}) as trained:
            trained.log_metrics({"train_loss": 0.25}, step=0)
    assert isinstance(reused, ReusedRun) and reused.run_id == finished.run_id
    assert not isinstance(trained, ReusedRun)
    children = reader.children(reader.client.get_run(second.run_id))
    assert [(c.info.run_name, c.info.run_id) for c in children] == [("c", finished.run_id), ("d", trained.run_id)]
    assert [m.value for m in reader.client.get_metric_history(finished.run_id, "train_loss")] == [0.5]

    with parent_run(store, "unit", "quick", "other code", {}, scope={**scope, "code_version": "v2"},
                    reuse=True) as third:
        with third.child("c", {"seed": 0}) as retrained:
            pass
    assert not isinstance(retrained, ReusedRun)


@pytest.mark.slow
def test_run_again_returns_the_finished_invocation_and_force_trains_everything_again(store_uri, reader):
    settings = ("epochs=30", "targets=sinc")
    first = _run("part1_1a", store_uri, *settings)
    assert _run("part1_1a", store_uri, *settings) == first  # nothing new at all
    forced = _run("part1_1a", store_uri, *settings, reuse=False)
    runs = _all_runs(reader, "part1_1a")
    assert forced != first and len(_own_children(runs, forced)) == 3
    newest = reader.latest_parent("part1_1a")
    assert newest.info.run_id == forced and reused_child_ids(newest) == []
    assert {c.info.run_id for c in reader.children(newest)} == {r.info.run_id for r in _own_children(runs, forced)}
    assert set(Counter(r.data.tags[TAG_CONFIG_HASH] for r in _children(runs, "FINISHED")).values()) == {2}


@pytest.mark.slow
def test_a_reused_model_gets_its_weights_back_for_the_interpolation(store_uri, reader):
    settings = ("epochs=1", "train_size=300", "test_size=200")
    first = reader.client.get_run(_run("part1_3c_i", store_uri, *settings))
    second = reader.client.get_run(_run("part1_3c_i", store_uri, *settings, "large_batch=100"))
    children = {run.info.run_name: run for run in reader.children(second)}
    assert sorted(children) == ["bs100", "bs100-independent-init", "bs64"]
    small, large = children["bs64"], children["bs100"]
    assert small.data.tags[MLFLOW_PARENT_RUN_ID] == first.info.run_id
    assert reused_child_ids(second) == [small.info.run_id]
    assert large.data.tags[MLFLOW_PARENT_RUN_ID] == second.info.run_id and large.data.params["batch_size"] == "100"
    curve = pd.read_csv(reader.download(second, "interpolation.csv")).drop(columns="pair")
    at_small = curve[curve.alpha == 0].iloc[0]  # θ(0) of both pairs is the reused model, from the restored weights
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert at_small[key] == pytest.approx(small.data.metrics[key], rel=1e-5)
    earlier = pd.read_csv(reader.download(first, "interpolation.csv")).drop(columns="pair")
    assert earlier[earlier.alpha == 0].iloc[0].to_dict() == pytest.approx(at_small.to_dict(), rel=1e-6)


def test_every_experiment_has_tiny_settings_here():
    assert set(TINY) == set(discover())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_an_interrupted_invocation_of_any_experiment_completes_from_its_finished_models(name, store_uri, reader):
    first = _run(name, store_uri, *TINY[name])
    originals = {r.info.run_id for r in reader.children(reader.client.get_run(first))}
    reader.client.set_terminated(first, "KILLED")  # as if the process died after its last model finished
    second = _run(name, store_uri, *TINY[name])
    parent = reader.latest_parent(name)
    assert second != first and parent.info.run_id == second
    assert _own_children(_all_runs(reader, name), second) == []  # nothing trained again
    assert {r.info.run_id for r in reader.children(parent)} == originals == set(reused_child_ids(parent))
    figures = get_experiment(name).analysis().figures(reader, parent)
    assert figures
    for figure in figures.values():
        plt.close(figure)


@pytest.mark.slow
def test_nets_trained_together_reuse_the_finished_ones_and_train_only_the_rest(store_uri, reader, tmp_path):
    settings = [s for s in TINY["part1_2a"] if not s.startswith("trainings=")]
    first = _run("part1_2a", store_uri, *settings, "trainings=2")
    finished = {r.info.run_name: r.info.run_id for r in reader.children(reader.client.get_run(first))}
    second = _run("part1_2a", store_uri, *settings, "trainings=3")
    parent = reader.client.get_run(second)
    assert set(reused_child_ids(parent)) == set(finished.values())
    (trained,) = _own_children(_all_runs(reader, "part1_2a"), second)
    assert trained.info.run_name == "dnn/run2" and trained.info.status == "FINISHED"
    assert [m.step for m in reader.client.get_metric_history(trained.info.run_id, "test_acc")] == [0, 1, 2]
    assert load_snapshots(reader.download(trained, ARTIFACT, tmp_path))["epoch"].tolist() == [0, 1, 2]
    assert sorted(r.info.run_name for r in reader.children(parent)) == ["dnn/run0", "dnn/run1", "dnn/run2"]


# --- crash safety ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_sweep_then_run_again_trains_only_what_is_missing(tmp_path):
    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    process = _start(SWEEP, tmp_path)
    _wait_until(lambda: _mid_sweep(reader, tmp_path), "a finished model and the next one training")
    process.kill()
    process.communicate(timeout=60)
    before = _all_runs(reader, "part1_1a")
    finished = {r.info.run_id for r in _children(before, "FINISHED")}
    orphans = {r.info.run_id for r in before if r.info.status == "RUNNING"}
    assert 1 <= len(finished) < len(SWEEP_MODELS) and len(orphans) == 2  # the parent and the model in training

    listed = hw1track("doctor", "--dry-run", cwd=tmp_path)
    assert listed.returncode == 0 and all(run_id in listed.stdout for run_id in orphans), listed.stdout
    assert {reader.client.get_run(run_id).info.status for run_id in orphans} == {"RUNNING"}

    again = hw1track(*SWEEP, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("marked KILLED, its process is gone") == 2
    after = _all_runs(reader, "part1_1a")
    assert {r.info.run_id: r.info.status for r in after if r.info.run_id in orphans} == dict.fromkeys(orphans, "KILLED")
    parent = reader.latest_parent("part1_1a")
    assert set(reused_child_ids(parent)) == finished
    assert len(_own_children(after, parent.info.run_id)) == len(SWEEP_MODELS) - len(finished)
    analysed = reader.children(parent)
    assert sorted(r.info.run_name for r in analysed) == SWEEP_MODELS
    assert len({r.data.tags[TAG_CONFIG_HASH] for r in analysed}) == len(SWEEP_MODELS)
    # no model was trained twice: one finished run per config in the whole store
    assert Counter(r.data.tags[TAG_CONFIG_HASH] for r in _children(after, "FINISHED")) == Counter(
        {r.data.tags[TAG_CONFIG_HASH]: 1 for r in analysed})
    for run in analysed:
        steps = [m.step for m in reader.client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(EPOCHS + 1))

    repeated = hw1track(*SWEEP, cwd=tmp_path)
    assert repeated.returncode == 0 and parent.info.run_id in repeated.stdout
    assert len(_all_runs(reader, "part1_1a")) == len(after)


@pytest.mark.slow
def test_sigterm_mid_sweep_flushes_the_metrics_ends_the_runs_killed_and_the_rerun_reuses(tmp_path):
    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    process = _start(SWEEP, tmp_path)
    _wait_until(lambda: _mid_sweep(reader, tmp_path), "a finished model and the next one training")
    time.sleep(0.5)  # the model in training logs a few hundred epochs into its buffer
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "marked KILLED" in stderr and "Traceback" not in stderr, stderr
    runs = _all_runs(reader, "part1_1a")
    assert "RUNNING" not in {r.info.status for r in runs}
    (killed,) = _children(runs, "KILLED")
    steps = [m.step for m in reader.client.get_metric_history(killed.info.run_id, "train_loss")]
    assert steps and steps == list(range(len(steps)))  # buffered, then flushed by the handler: no gap
    finished = {r.info.run_id for r in _children(runs, "FINISHED")}

    again = hw1track(*SWEEP, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    parent = reader.latest_parent("part1_1a")
    assert set(reused_child_ids(parent)) == finished
    assert len(_own_children(_all_runs(reader, "part1_1a"), parent.info.run_id)) == len(SWEEP_MODELS) - len(finished)


def test_doctor_marks_runs_whose_process_is_gone_and_leaves_live_ones(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(uri)
    experiment_id = store.experiment_id("part1_1a", create=True)
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here, now = socket.gethostname(), int(time.time() * 1000)

    def running(name: str, tags: dict, hours_ago: float = 0) -> str:
        tags = {TAG_EXPERIMENT: "part1_1a", TAG_ROLE: "child", **tags}
        return store.client.create_run(experiment_id, run_name=name, tags=tags,
                                       start_time=now - int(hours_ago * 3600_000)).info.run_id

    gone = {running("exited", {TAG_HOST: here, TAG_PID: exited.stdout.strip()}),
            running("old, elsewhere", {TAG_HOST: "elsewhere", TAG_PID: "1"}, hours_ago=48),
            running("old, no process recorded", {}, hours_ago=48)}
    live = {running("this process", current_process_tags()),
            running("recent, elsewhere", {TAG_HOST: "elsewhere", TAG_PID: "1"}, hours_ago=1)}
    if TAG_PROCESS_START in current_process_tags():  # a recycled pid: same id, another process
        gone.add(running("recycled pid", {TAG_HOST: here, TAG_PID: str(os.getpid()), TAG_PROCESS_START: "1"}))

    def statuses() -> dict[str, str]:
        return {run_id: store.client.get_run(run_id).info.status for run_id in gone | live}

    listed = hw1track("doctor", "--dry-run", "--tracking-uri", uri, cwd=tmp_path)
    assert listed.returncode == 0 and {run_id for run_id in gone | live if run_id in listed.stdout} == gone
    assert set(statuses().values()) == {"RUNNING"}
    marked = hw1track("doctor", "--tracking-uri", uri, cwd=tmp_path)
    assert marked.returncode == 0 and f"{len(gone)} orphaned runs" in marked.stdout, marked.stdout
    assert statuses() == {**dict.fromkeys(gone, "KILLED"), **dict.fromkeys(live, "RUNNING")}
    assert find_orphans(store) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = hw1track("doctor", cwd=empty)
    assert nothing.returncode == 0 and "nothing to check" in nothing.stdout and not any(empty.iterdir())


# --- concurrency -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True])
def test_two_runs_at_once_on_a_fresh_default_store_both_complete(tmp_path, force):
    args = ("run", "part1_1a", "--set", "targets=sinc", "--set", "epochs=200", "--threads", "1", "--seeds", "1")
    processes = [_start(args + (("--force",) if force else ()), tmp_path) for _ in range(2)]
    results = [process.communicate(timeout=600) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [stderr for _, stderr in results]
    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = _all_runs(reader, "part1_1a")
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = reader.parents("part1_1a")
    assert len(parents) == 2 if force else 1 <= len(parents) <= 2  # one when the second found the first finished
    for parent in parents:
        assert sorted(r.info.run_name for r in reader.children(parent)) == SWEEP_MODELS
    per_config = Counter(r.data.tags[TAG_CONFIG_HASH] for r in _children(runs, "FINISHED"))
    # without --force, a model one process is training is awaited and reused by the other, never trained twice
    assert len(per_config) == 3 and set(per_config.values()) == ({2} if force else {1})


# --- bad input: one line, non-zero exit, no traceback, nothing half-written -------------------------------------


@pytest.mark.parametrize("command", ["run", "analyze"])
def test_a_refused_connection_to_the_tracking_server_fails_in_seconds(tmp_path, command):
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        started = time.monotonic()
        done = hw1track(command, "part1_1a", "--tracking-uri", uri, cwd=tmp_path)
        elapsed = time.monotonic() - started
    _one_error_line(done, 1, f"cannot reach the tracking server at {uri}")
    assert elapsed < 25, elapsed  # MLflow's own retries would take minutes
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_tracking_server_that_never_answers_fails_in_seconds(tmp_path):
    with socket.socket() as silent:  # the kernel accepts connections into the backlog; nothing ever replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        done = hw1track("run", "part1_1a", "--tracking-uri", uri, cwd=tmp_path)
        elapsed = time.monotonic() - started
    _one_error_line(done, 1, "cannot reach the tracking server")
    assert "Timeout" in done.stderr and elapsed < 30, (elapsed, done.stderr)


@pytest.mark.parametrize("damage, message", [("truncated", "cannot read"), ("altered", "checksum mismatch")])
def test_a_corrupted_mnist_file_fails_before_the_store_exists(tmp_path, mnist_source, damage, message):
    source = tmp_path / "mnist"
    source.mkdir()
    for path in mnist_source.glob("*.gz"):
        shutil.copy(path, source / path.name)
    victim = source / "train-labels-idx1-ubyte.gz"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
    else:
        labels = bytearray(gzip.decompress(victim.read_bytes()))
        labels[-1] = (labels[-1] + 1) % 10
        victim.write_bytes(gzip.compress(bytes(labels)))
    done = hw1track("run", "part1_1b", "--mnist-dir", str(source), cwd=tmp_path,
                    env={"HW1TRACK_DATA_ROOT": str(tmp_path / "fresh-root")})
    _one_error_line(done, 1, message)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@contextmanager
def _read_only(folder: Path):
    """Permission bits do not stop root, so as root the folder is made immutable as well."""
    folder.chmod(0o555)
    as_root = os.geteuid() == 0
    if as_root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        folder.chmod(0o755)
        pytest.skip("running as root where chattr +i is not allowed: no way to make a read-only folder")
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
def test_a_read_only_store_folder_fails_with_one_line_and_nothing_written(tmp_path, existing):
    folder = tmp_path / "store"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if existing:
        _run("part1_1a", uri, "epochs=5", "targets=sinc")
    before = _listing(folder)
    with _read_only(folder):
        done = hw1track("run", "part1_1a", "--set", "epochs=6", "--set", "targets=sinc", "--tracking-uri", uri,
                        cwd=tmp_path)
    _one_error_line(done, 1, f"cannot write the tracking store in {folder}")
    assert _listing(folder) == before


class _CodeOnUnpickling:
    """Pickles as a call to os.mkdir: loading it with unpickling allowed would run that call."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.slow
@pytest.mark.parametrize("payload", ["garbage", "pickled code"])
def test_a_weight_artifact_that_fails_to_load_is_one_line_naming_run_and_artifact(tmp_path, payload):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _run("part1_1a", uri, "epochs=5", "targets=sinc")
    reader = StoreReader(uri)
    reader.client.set_terminated(first, "KILLED")  # so that the next run reuses its models
    victim = reader.children(reader.client.get_run(first))[0]
    weights = Path(urlparse(victim.info.artifact_uri).path) / "weights" / "final.pt"
    marker = tmp_path / "unpickled"
    if payload == "garbage":
        weights.write_bytes(b"not a checkpoint")
    else:
        torch.save({"0.weight": _CodeOnUnpickling(marker)}, weights)
    before = {r.info.run_id for r in _all_runs(reader, "part1_1a")}
    done = hw1track("run", "part1_1a", "--set", "epochs=5", "--set", "targets=sinc", "--tracking-uri", uri,
                    cwd=tmp_path)
    _one_error_line(done, 1, f"run {victim.info.run_id}: artifact weights/final.pt cannot be loaded")
    assert not marker.exists()
    new = [r for r in _all_runs(reader, "part1_1a") if r.info.run_id not in before]
    # the invocation ends FAILED with no model of its own; nothing is left RUNNING
    assert [(r.data.tags[TAG_ROLE], r.info.status) for r in new] == [("parent", "FAILED")]
