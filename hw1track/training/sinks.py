"""Where training reports its numbers: the tracking layer implements it, benchmarks discard them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class MetricSink(Protocol):
    """Where training reports numbers; the tracking layer buffers them for MLflow."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None: ...


class NullSink:
    """Discards everything: for benchmarks that time training without tracking."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_series(self, series: Mapping[str, list[float]], first_step: int) -> None:
        pass
