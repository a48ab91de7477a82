"""A study on a Ray cluster: one Ray task per (experiment, replicate), every task logging to one tracking store.

The command that starts the study is the driver: it validates, clears
orphans and checks for a finished twin as in-process (`invocation`), opens the
parent run, hands each task the parent's run id, the absolute tracking URI and
the absolute MNIST paths (a task's working directory is Ray's, not the
driver's), waits, and ends the parent FINISHED only when every task succeeded.
A task attaches to the parent and runs the experiment's own code on its one
replicate (`invocation.train_one_replicate`).

Ray is optional (`pip install 'hw1track[ray]'`) and imported only here, only
when asked for. Everything that can be refused is refused in seconds with one
line, before anything is written: Ray missing, a cluster that does not answer,
and a local SQLite store that the nodes of a remote cluster could not reach.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hw1track.errors import Hw1Error, UsageError
from hw1track.study.discovery import Experiment
from hw1track.study.invocation import Invocation, opened_parent, train_one_replicate
from hw1track.study.progress import StudyProgress
from hw1track.tracking.orphans import earlier_attempts, mark_killed
from hw1track.tracking.store import Store, local_database
from hw1track.training import data as mnist_data

INSTALL = "--executor ray needs Ray: pip install 'hw1track[ray]'"
PROBE_TIMEOUT_SECONDS = 5  # a cluster whose head does not accept a connection within this is unreachable
LOCAL = "local"  # Ray's word for a cluster of this machine, started for this command and stopped after it
ON_THIS_MACHINE = {None, "", LOCAL, "auto"}  # "auto": the cluster `ray start` last started here (`_auto_address`)
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray client, and the head's GCS
WAIT_SECONDS = 1.0  # how often the progress line can change while nothing ends
CANCEL_GRACE_SECONDS = 15.0  # for cancelled tasks to end their runs KILLED
# A task's own stages (see `_replicate_task`), so the driver can tell running from queued.
STARTED, TRAINED = "started", "trained"
# Settings the tasks must see as the driver does (outage patience, MLflow's request settings, code version).
FORWARDED_ENV_PREFIXES = ("HW1TRACK_", "MLFLOW_")


class ClusterUnreachable(Hw1Error):
    """No Ray cluster answers at the address given."""


class TaskFailed(Hw1Error):
    """A replicate's task raised, or its worker died; its parent run ended FAILED."""


def cluster_address(given: str | None) -> str:
    """The address Ray will use: --ray-address, else $RAY_ADDRESS, else a cluster of this machine for this command.

    Not Ray's own default, which connects to the cluster last started on this
    machine if its address file says so, and waits for minutes when that
    cluster is gone; `--ray-address auto` asks for it explicitly.
    """
    return given or os.environ.get("RAY_ADDRESS") or LOCAL


def check_store_reachable(address: str | None, tracking_uri: str) -> None:
    """A remote cluster's nodes cannot open a SQLite file on this machine: refuse before anything is created."""
    if local_database(tracking_uri) is not None and not _on_this_machine(address):
        raise UsageError(f"a Ray cluster needs a tracking server every node can reach, not {tracking_uri} "
                         f"(--ray-address {address}); start `mlflow server` and pass --tracking-uri http://HOST:PORT")


def check_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL) from None


def _host_and_port(address: str) -> tuple[str, int]:
    scheme, _, rest = address.rpartition("://")
    host, colon, port = rest.rpartition(":")
    if not colon or host.endswith(":") or not port.isdigit():  # no port given (or a bare IPv6 address)
        host, port = rest, str(DEFAULT_PORTS.get(scheme, DEFAULT_PORTS[""]))
    return host.strip("[]"), int(port)


def _on_this_machine(address: str | None) -> bool:
    if address in ON_THIS_MACHINE:
        return True
    host, _ = _host_and_port(address)
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host != "::1" else host).is_loopback
    except (OSError, ValueError):
        return False


def _probe(address: str) -> None:
    """One TCP connection to the head with a timeout: `ray.init` on a dead address retries for much longer."""
    host, port = _host_and_port(address)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise ClusterUnreachable(f"cannot reach the Ray cluster at {address} ({type(exc).__name__} within "
                                 f"{PROBE_TIMEOUT_SECONDS} s); start it with `ray start --head` or pass another "
                                 f"--ray-address") from None


def _auto_address() -> str:
    """The head `--ray-address auto` means: the address `ray start` last wrote on this machine
    (`ray_current_cluster` in Ray's temp folder), else the cluster Ray's own search finds running here.

    Resolved here so that it is probed like any other address: `ray.init("auto")` on a cluster that has
    stopped since retries its connection for minutes.
    """
    from ray._private import services, utils

    recorded = utils.read_ray_address()
    if recorded:
        return recorded
    try:
        return services.canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ClusterUnreachable("--ray-address auto: no Ray cluster was started on this machine; start one with "
                                 "`ray start --head` or pass its address") from None


@contextmanager
def connected(address: str, device: torch.device, experiments: int) -> Iterator[RayExecutor]:
    """A `RayExecutor` on the cluster at `address` (see `cluster_address`)."""
    check_installed()
    import ray

    if address == "auto":
        address = _auto_address()
    if address not in ON_THIS_MACHINE:
        _probe(address)
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=True, runtime_env={"env_vars": env} if env else None)
    except ConnectionError as exc:
        raise ClusterUnreachable(f"cannot connect to the Ray cluster at {address}: "
                                 f"{str(exc).splitlines()[0]}") from None
    try:
        if device.type == "cuda" and ray.cluster_resources().get("GPU", 0) < 1:
            raise UsageError(f"--device {device} asked for, but the Ray cluster has no GPU")
        yield RayExecutor(ray, device, StudyProgress(experiments))
    finally:
        ray.shutdown()


def _replicate_task(invocation: Invocation, parent_run_id: str, replicate: int,
                    mnist_root: str | None) -> Iterator[str]:
    """The body of one Ray task: says it started (so the driver can count it running), then trains its replicate.

    A retry (its worker died) first ends KILLED the runs the dead attempt left
    RUNNING, so each configuration ends with one FINISHED child; models that
    attempt finished are reused unless --force.
    """
    yield STARTED
    store = Store(invocation.tracking_uri)
    mark_killed(store, earlier_attempts(store, parent_run_id, replicate))
    train_one_replicate(invocation, parent_run_id, replicate, mnist_root)
    yield TRAINED


class RayExecutor:
    """Each replicate of an invocation as a Ray task with its own CPUs (and a GPU on `--device cuda`)."""

    def __init__(self, ray: Any, device: torch.device, progress: StudyProgress):
        self._ray = ray
        self._device = device
        self.progress = progress
        # Retried once if its worker dies (a lost node, the OOM killer); an exception is the code's answer.
        self._task = ray.remote(max_retries=1, retry_exceptions=False)(_replicate_task)

    def default_threads(self) -> int:
        """One CPU per task: a replicate's nets are small, so N tasks on N cores beat fewer tasks with more
        threads each, and a task's thread count is the CPUs it reserves, so tasks never contend for a core."""
        return 1

    def run(self, experiment: Experiment, invocation: Invocation, store: Store) -> str:
        invocation = replace(invocation, mnist_dir=_absolute(invocation.mnist_dir or
                                                             os.environ.get(mnist_data.SOURCE_ENV)),
                             # a task sees only the GPU Ray gave it, as its first
                             device="cuda" if self._device.type == "cuda" else invocation.device)
        mnist_root = str(mnist_data.default_root())
        with opened_parent(experiment, invocation, store) as parent:
            options = {"num_cpus": invocation.threads, "num_gpus": 1 if self._device.type == "cuda" else 0}
            tasks = {self._task.options(**options).remote(invocation, parent.run_id, r, mnist_root): r
                     for r in range(invocation.seeds)}
            self.progress.begin(experiment.name, len(tasks))
            try:
                failures = self._wait(tasks)
            except BaseException:
                self._cancel(tasks)
                raise
            finally:
                self.progress.end_line()
            if failures:
                raise TaskFailed(_failure_line(experiment.name, failures, len(tasks)))
            return parent.run_id

    def _wait(self, tasks: dict[Any, int]) -> dict[int, BaseException]:
        """Until every task has ended; the replicates whose task failed, with what it raised."""
        ray = self._ray
        pending, started, failures = dict(tasks), set(), {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            for task in ready:
                replicate = pending[task]
                try:
                    stage = ray.get(next(task))
                except ray.exceptions.RayError as exc:
                    failures[replicate] = exc
                    self.progress.task_ended(ok=False, was_started=replicate in started)
                    del pending[task]
                    continue
                if stage == STARTED:
                    started.add(replicate)
                    self.progress.task_started()
                else:
                    self.progress.task_ended(ok=True, was_started=True)
                    del pending[task]
        return failures

    def _cancel(self, tasks: dict[Any, int]) -> None:
        """Interrupt the tasks as Ctrl-C would (their runs end KILLED), and give them a moment to do so."""
        for task in tasks:
            try:
                self._ray.cancel(task)
            except Exception:  # an ended task or a lost cluster: nothing left to cancel
                pass
        self._ray.wait(list(tasks), num_returns=len(tasks), timeout=CANCEL_GRACE_SECONDS)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _failure_line(experiment: str, failures: dict[int, BaseException], tasks: int) -> str:
    """Names the first failed task and says what it raised; a bug's traceback goes to stderr first."""
    replicate, error = min(failures.items())
    cause = getattr(error, "cause", None)
    if isinstance(cause, Hw1Error):
        what = str(cause)
    elif cause is not None:
        print(getattr(error, "traceback_str", ""), file=sys.stderr)
        what = f"{type(cause).__name__}: {cause}"
    else:
        what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    others = f" ({len(failures)} of {tasks} tasks failed)" if len(failures) > 1 else ""
    return f"{experiment}: the task of replicate {replicate} failed{others}: {what}; the parent run was marked FAILED"
