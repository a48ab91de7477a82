"""What the machine did while a parent run was open, through MLflow's own system-metrics monitor.

A run that took twice as long as the last one is explained from the store
alone when it holds the machine's CPU and memory use beside the training
metrics (`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
..., and GPU utilisation and memory on CUDA when `nvidia-ml-py` is installed).
MLflow samples in a thread of its own; a sample costs a few psutil calls and a
`get_run`, so at one every `SAMPLING_SECONDS` it is far below the noise of a
training epoch. MLflow's monitor logs only whole sampling intervals; the
interval a run ends in is logged here, so a run shorter than one has a sample too.

`HW1TRACK_SYSTEM_METRICS=0` turns them off; MLflow's own
`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` changes the interval.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_ENV = "HW1TRACK_SYSTEM_METRICS"
SAMPLING_SECONDS = 10.0
PREFIX = "system/"

# A monitor that cannot reach the store says so at WARNING in its thread, while the run itself retries
# and reports in one line (`server_retries`): its messages would only repeat that line's news.
logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


@contextmanager
def recorded(run_id: str, tracking_uri: str) -> Iterator[None]:
    """System metrics of this machine logged to `run_id` while the body runs (nothing when turned off)."""
    if not enabled():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=SAMPLING_SECONDS, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:  # the monitor drops the interval a run ends in: log it, so a short run has a sample too
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception:  # noqa: BLE001 - system metrics never cost the run its result
            logging.getLogger(__name__).debug("no last system-metrics sample", exc_info=True)
