"""Real MLflow servers on loopback for the tests: started as a user would, stopped in teardown.

`serving(...)` runs any server command until its URL answers; the `tracking_server`
fixture is a shared `mlflow server` with a SQLite backend and proxied artifacts,
like a team's server; `ui_server(...)` is `hw1track ui` on a free port. Test
modules use the fixture by importing it (`from servers import tracking_server`).
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


@contextmanager
def mlflow_server(root: Path) -> Iterator[TrackingServer]:
    """`mlflow server` with its own SQLite database and artifact folder under `root`, serving artifacts."""
    root.mkdir(parents=True, exist_ok=True)
    database, artifacts, port = root / "server.db", root / "artifacts", free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{database}",
               "--artifacts-destination", str(artifacts), "--serve-artifacts"]
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
