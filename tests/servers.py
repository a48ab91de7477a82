"""Real MLflow servers on loopback for the tests: started as a user would, stopped in teardown.

`serving(...)` runs any server command until its URL answers; the `tracking_server`
fixture is a shared `mlflow server` with a SQLite backend and proxied artifacts,
like a team's server; `ui_server(...)` is `hw1track ui` on a free port. Test
modules use the fixture by importing it (`from servers import tracking_server`).
`RestartableServer` is a tracking server that a test kills with SIGKILL and
starts again on the same port and store, as an outage would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 120.0  # MLflow's server imports for tens of seconds on a busy 2-core machine
STOP_TIMEOUT = 30.0
# Servers in tests report to nobody and run no background job workers.
SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
              "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until_answering(url: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering:\n{log.read_text()}")
        if _answers(url):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s:\n{log.read_text()}")


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    """Ask the server to shut down as Ctrl-C would; kill it only if it does not within the timeout."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            raise
    return process.returncode


@contextmanager
def serving(command: list[str], health_url: str, log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run `command` until `health_url` answers 200; stop it on exit whatever happened."""
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **SERVER_ENV}, stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until_answering(health_url, process, log)
            yield process
        finally:
            stop(process)


@dataclass(frozen=True)
class TrackingServer:
    uri: str
    backend_database: Path
    artifacts: Path
    process: subprocess.Popen


def _mlflow_server_command(database: Path, artifacts: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{database}",
            "--artifacts-destination", str(artifacts), "--serve-artifacts"]


@contextmanager
def mlflow_server(root: Path) -> Iterator[TrackingServer]:
    """`mlflow server` with its own SQLite database and artifact folder under `root`, serving artifacts."""
    root.mkdir(parents=True, exist_ok=True)
    database, artifacts, port = root / "server.db", root / "artifacts", free_port()
    command = _mlflow_server_command(database, artifacts, port)
    uri = f"http://{LOOPBACK}:{port}"
    with serving(command, f"{uri}/health", root / "server.log", cwd=root) as process:
        yield TrackingServer(uri, database, artifacts, process)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[TrackingServer]:
    """One tracking server per test module (starting one takes seconds)."""
    with mlflow_server(tmp_path_factory.mktemp("tracking-server")) as server:
        yield server


@contextmanager
def ui_server(log: Path, *args: str, cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`hw1track ui` on a free loopback port; yields its URL and process."""
    port = free_port()
    command = [sys.executable, "-m", "hw1track.cli", "ui", "--port", str(port), *args]
    url = f"http://{LOOPBACK}:{port}"
    with serving(command, f"{url}/health", log, cwd=cwd) as process:
        yield url, process


class RestartableServer:
    """`mlflow server` under `root` that can be killed and started again on the same port, database and artifacts.

    It runs in its own session: `mlflow server` starts uvicorn as a child process, which
    holds the port, so a kill goes to the whole process group.
    """

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.uri = f"http://{LOOPBACK}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it and return once it answers."""
        assert self.process is None, "already running"
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        command = _mlflow_server_command(self.root / "server.db", self.root / "artifacts", self.port)
        with open(log, "w") as output:
            self.process = subprocess.Popen(command, cwd=self.root, env={**os.environ, **SERVER_ENV}, stdout=output,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        try:
            wait_until_answering(f"{self.uri}/health", self.process, log)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL to the server and its workers, as a crash or a lost machine would end them."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None


@contextmanager
def restartable_server(root: Path) -> Iterator[RestartableServer]:
    """A started `RestartableServer`, killed on exit whatever happened."""
    server = RestartableServer(root)
    server.start()
    try:
        yield server
    finally:
        server.kill()
