"""How long requests to a tracking server are retried: long enough to ride out a restart, not forever.

MLflow reads its retry settings from the environment at every request, and
urllib3 retries a refused connection, a dropped one and a 408/429/5xx answer
alike, sleeping 0, 2F, 4F, 8F, ... s (F the back-off factor, each sleep at most
120 s, plus up to MLFLOW_HTTP_REQUEST_BACKOFF_JITTER s) between its attempts. So
the retries are chosen as the fewest whose sleeps add up to the outage a run
should survive, `HW1TRACK_SERVER_OUTAGE_SECONDS` (120 by default, 126 s of
sleeps once rounded up to the doublings). The user's own MLFLOW_HTTP_* settings
win over these.

Once a request has failed after all its retries, the server counts as lost:
every later request of the process is tried once with a short timeout, so that
ending the runs (flush, set_terminated) costs seconds instead of one full
outage each, and the failure reaches the user as one `ServerLost` line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hw1track.errors import Hw1Error, ServerLost, UsageError

OUTAGE_ENV = "HW1TRACK_SERVER_OUTAGE_SECONDS"
DEFAULT_OUTAGE_SECONDS = 120.0
BACKOFF_FACTOR = 1  # MLflow takes whole numbers; 1 rounds the outage up to the nearest doubling most closely
REQUEST_TIMEOUT_SECONDS = 20  # one attempt at a server that accepts connections but does not answer
LOST_TIMEOUT_SECONDS = 5  # one attempt once the server is lost: a server back by then still gets the runs ended
MAX_RETRIES = 10  # MLflow refuses more (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
MAX_SLEEP_SECONDS = 120.0  # urllib3's cap on one back-off sleep

RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
MLFLOW_DEFAULTS = {RETRIES: 7, FACTOR: 2, JITTER: 1.0, TIMEOUT: 120}

_lost_after: float | None = None  # the outage that was waited out before the server counted as lost


def sleep_seconds(retries: int, factor: float) -> float:
    """What urllib3 sleeps in all over `retries` retries (without jitter): none before the first, then doubling."""
    return sum(min(MAX_SLEEP_SECONDS, factor * 2 ** (failures - 1)) for failures in range(2, retries + 1))


def wanted_outage_seconds() -> float:
    value = os.environ.get(OUTAGE_ENV)
    if not value:
        return DEFAULT_OUTAGE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{OUTAGE_ENV} must be a number of seconds above 0, not {value!r}")
    return seconds


def retries_for(outage_seconds: float, factor: float = BACKOFF_FACTOR) -> int:
    """The fewest retries whose sleeps cover `outage_seconds` (MLflow's limit if none do)."""
    return next((n for n in range(MAX_RETRIES + 1) if sleep_seconds(n, factor) >= outage_seconds), MAX_RETRIES)


def retry_patiently() -> None:
    """Retry requests for the wanted outage, unless the user set MLflow's own settings."""
    os.environ.setdefault(FACTOR, str(BACKOFF_FACTOR))
    os.environ.setdefault(RETRIES, str(retries_for(wanted_outage_seconds(), _setting(FACTOR))))
    os.environ.setdefault(TIMEOUT, str(REQUEST_TIMEOUT_SECONDS))


def _setting(name: str) -> float:
    return float(os.environ.get(name) or MLFLOW_DEFAULTS[name])


def outage_seconds() -> float:
    """How long a request is retried under the settings in effect: its sleeps, at most plus their jitter."""
    retries = int(_setting(RETRIES))
    return sleep_seconds(retries, _setting(FACTOR)) + max(0, retries - 1) * _setting(JITTER)


def longest_request_seconds() -> float:
    """The longest one request can take: its sleeps and every attempt timing out (a server that hangs)."""
    return outage_seconds() + (int(_setting(RETRIES)) + 1) * _setting(TIMEOUT)


def is_lost(exc: BaseException) -> bool:
    """Whether `exc` is a request that got no answer through all its retries (MLflow wraps it in MlflowException)."""
    import requests
    import urllib3

    if isinstance(exc, ServerLost):
        return True
    unanswered = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError,
                  urllib3.exceptions.MaxRetryError)
    seen = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, Hw1Error):
        if isinstance(exc, unanswered):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def give_up_quickly() -> None:
    """From now on try each request once with a short timeout: the server did not come back in time."""
    global _lost_after
    if _lost_after is None:
        _lost_after = outage_seconds()
    os.environ[RETRIES] = "0"
    os.environ[TIMEOUT] = str(LOST_TIMEOUT_SECONDS)


def give_up_quickly_if_lost(exc: BaseException) -> bool:
    lost = is_lost(exc)
    if lost:
        give_up_quickly()
    return lost


def is_given_up() -> bool:
    return _lost_after is not None


def lost(uri: str) -> ServerLost:
    waited = outage_seconds() if _lost_after is None else _lost_after
    return ServerLost(f"lost the tracking server at {uri}: no answer through {waited:.0f} s of retries; runs it could "
                      f"not end stay RUNNING there until the next `hw1track run` or `hw1track doctor` marks them "
                      f"KILLED; rerun to continue from the models that finished")


@contextmanager
def reported_in_one_line(uri: str) -> Iterator[None]:
    """Turn a lost server met inside into one `ServerLost` line instead of MLflow's chained traceback."""
    try:
        yield
    except ServerLost:
        raise
    except Exception as exc:
        if not give_up_quickly_if_lost(exc):
            raise
        raise lost(uri) from None
