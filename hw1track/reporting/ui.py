"""Browsing the store in MLflow's web UI: `hw1track ui` starts `mlflow server` for it.

The project's default store is `mlflow.db` in the working directory, which is
also what a plain `mlflow ui` there opens; every experiment records the absolute
folder of its artifacts, so either way the UI finds the weights and figures.
The server runs as a child process in its own process group: Ctrl-C (or SIGTERM)
reaches `hw1track` once, is passed on once, and the command waits for the
server to shut down before it exits, so no server is left behind and no
traceback is printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from urllib.parse import urlparse

import click

from hw1track.errors import StoreError, UsageError
from hw1track.tracking.store import default_tracking_uri, local_database

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# One person browsing a local store does not need MLflow's default of 4 worker processes,
# each of which imports MLflow; one starts faster and leaves the cores to training.
WORKERS = 1
# MLflow's background job runner serves GenAI evaluations, which this project has none of;
# a user who wants it sets the variable.
SERVER_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def backend_store(tracking_uri: str | None) -> str:
    """The store the UI should serve; refuses what it cannot serve before anything starts."""
    uri = tracking_uri or default_tracking_uri()
    if urlparse(uri).scheme in {"http", "https"}:
        raise UsageError(f"{uri} is a tracking server: it serves its own UI, open it in a browser")
    database = local_database(uri)
    if database is not None and not database.exists():
        raise StoreError(f"no store at {database}; run `hw1track run <experiment>` first")
    return uri


def server_command(backend_store_uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--host", host, "--port", str(port), "--workers", str(WORKERS)]


def browser_url(host: str, port: int) -> str:
    """Where to point a browser: a wildcard bind address is reachable on loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """MLflow reports a taken port only deep in its server's log; say it in one line instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None


def serve(tracking_uri: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run the UI until it stops or is interrupted; returns the exit code for the command."""
    uri = backend_store(tracking_uri)
    _check_port_free(host, port)
    click.echo(f"MLflow UI for {uri} at {browser_url(host, port)} (Ctrl-C to stop)")
    received: list[int] = []
    server: subprocess.Popen | None = None

    def pass_on(signum: int, frame: object) -> None:
        received.append(signum)
        if server is not None and server.poll() is None:
            server.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not received:
            server = subprocess.Popen(server_command(uri, host, port), process_group=0,
                                      env={**SERVER_ENV_DEFAULTS, **os.environ})
            if received:  # arrived while the server was being started
                server.send_signal(received[0])
            code = server.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else code
