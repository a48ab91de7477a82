"""How a run ends: always with a status that says how (FINISHED, FAILED, KILLED), never left RUNNING.

Ctrl-C and SIGTERM (what `kill`, a scheduler or a closing terminal send) end
their runs as KILLED, an exception as FAILED, after flushing what the run had
buffered, so that the store shows what happened and keeps everything logged
until then. Only `kill -9` and crashes escape this; `orphans` clears those.
A tracking server lost for longer than requests are retried is tried once more
per request, quickly (`server_retries`), so a run it still reaches ends FAILED
and one it does not costs seconds, not another outage.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunStatus

from hw1track.tracking.server_retries import give_up_quickly_if_lost

if TYPE_CHECKING:
    from hw1track.tracking.runs import TrackedRun


class Terminated(BaseException):
    """SIGTERM turned into an exception so that runs end as KILLED, like Ctrl-C."""


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def _status_for(exc: BaseException) -> str:
    return RunStatus.to_string(RunStatus.KILLED if isinstance(exc, (KeyboardInterrupt, Terminated))
                               else RunStatus.FAILED)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a run is being ended: a second Ctrl-C must not leave it RUNNING."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def ended_with_status(run: TrackedRun) -> Iterator[TrackedRun]:
    """End `run` as FINISHED, or FAILED/KILLED after flushing what it buffered."""
    try:
        yield run
    except BaseException as exc:
        give_up_quickly_if_lost(exc)
        with _signals_deferred():
            try:
                run.flush()
            finally:
                run.end(_status_for(exc))
        raise
    with _signals_deferred():
        try:
            run.flush()
        except BaseException as exc:
            give_up_quickly_if_lost(exc)
            run.end(RunStatus.to_string(RunStatus.FAILED))
            raise
        run.end("FINISHED")
