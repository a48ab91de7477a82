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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunStatus

from hw1track.tracking.server_retries import give_up_quickly_if_lost

if TYPE_CHECKING:
    from hw1track.tracking.runs import TrackedRun


class Terminated(BaseException):
    """SIGTERM turned into an exception so that runs end as KILLED, like Ctrl-C."""


_signals_received: list[int] = []


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated("terminated by SIGTERM")


def raise_on_signals() -> None:
    """Turn SIGINT and SIGTERM into exceptions that reach the training loop even when the first is lost.

    Python raises a signal's exception in whatever code runs when the signal
    arrives. When that is a garbage-collection callback (SQLAlchemy registers
    weakref callbacks), the interpreter prints "Exception ignored" with a
    traceback and training goes on as if nothing was sent. So the signal is also
    remembered, every run raises it again the next time it logs
    (`raise_if_signalled`), and the lost exception is not printed.
    """
    def handler(signum: int, frame: Any) -> None:
        _signals_received.append(signum)
        raise _exception_for(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    print_unraisable = sys.unraisablehook

    def unraisable(lost: Any) -> None:
        if not isinstance(lost.exc_value, (KeyboardInterrupt, Terminated)):
            print_unraisable(lost)

    sys.unraisablehook = unraisable


def raise_if_signalled() -> None:
    """Raise again a signal whose exception was lost; a no-op when none arrived."""
    if _signals_received:
        raise _exception_for(_signals_received[-1])


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
