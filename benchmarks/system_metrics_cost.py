"""What MLflow's system-metrics monitor costs a run: the process's CPU time while training sleeps, monitor on and off.

    .venv/bin/python benchmarks/system_metrics_cost.py [--seconds 120] [--rounds 2]

Every parent run samples the machine (`hw1track.tracking.system_metrics`) in a thread of the training
process. Timing a training job with the monitor on and off (W4 of `vs_naive.py`) asks for a difference of
well under 1 % on a machine whose identical runs can differ by far more, so this measures the monitor on
its own instead: the main thread sleeps inside `system_metrics.recorded`, so the process's CPU time is the
monitor's (sampling and logging to a local SQLite store) plus a baseline measured the same way with the
monitor off, rounds alternating. CPU time is what the monitor takes from training on a busy core, whatever
else the machine does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from hw1track.tracking import system_metrics


def cpu_seconds_over(seconds: float, client: MlflowClient, experiment_id: str, uri: str, on: bool) -> tuple[float, int]:
    """The process's CPU seconds while a run is open for `seconds` with the monitor on or off; and its samples."""
    os.environ[system_metrics.SWITCH_ENV] = "1" if on else "0"
    run_id = client.create_run(experiment_id).info.run_id
    started = time.process_time()
    with system_metrics.recorded(run_id, uri):
        time.sleep(seconds)
    cpu = time.process_time() - started
    client.set_terminated(run_id)
    samples = len(client.get_metric_history(run_id, f"{system_metrics.PREFIX}cpu_utilization_percentage"))
    return cpu, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long each run stays open")
    parser.add_argument("--rounds", type=int, default=2, help="alternating pairs of runs, monitor on then off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("system-metrics-cost")
        on, off = [], []
        for _ in range(args.rounds):
            for monitor, costs in ((True, on), (False, off)):
                cpu, samples = cpu_seconds_over(args.seconds, client, experiment_id, uri, monitor)
                costs.append(cpu)
                print(f"monitor {'on ' if monitor else 'off'}: {cpu:.3f} s CPU in {args.seconds:g} s, "
                      f"{samples} samples", flush=True)
    extra = min(on) - min(off)
    print(f"the monitor's CPU time: {extra:.3f} s per {args.seconds:g} s (sampling every "
          f"{system_metrics.SAMPLING_SECONDS:g} s), {100 * extra / args.seconds:.2f} % of one core; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
