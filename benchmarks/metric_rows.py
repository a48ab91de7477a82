"""CPU and wall time per metric row stored in a local SQLite store: `log_batch` vs `sqlite_metrics`.

A run that logs at every iteration stores tens of thousands of rows, and the
training process pays for each. This times MLflow's `MlflowClient.log_batch`
(1,000 rows per call, its limit) against `hw1track.tracking.sqlite_metrics` in
transactions of 1,000 and of 10,000 rows (`tracking.LOCAL_ROWS_PER_WRITE`),
each into its own fresh store, and checks that both store the same rows.

    .venv/bin/python benchmarks/metric_rows.py [iterations]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from hw1track.tracking import sqlite_metrics
from hw1track.tracking.runs import LOCAL_ROWS_PER_WRITE

KEYS = ("loss", "grad_norm", "train_loss")


def _fresh_run(folder: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    return uri, client, client.create_run(experiment).info.run_id


def _timed(write: Callable[[Sequence], None], rows: Sequence, per_call: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(rows), per_call):
        write(rows[start:start + per_call])
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rows = [(key, float(i) / 7, 1_700_000_000_000 + i, i) for i in range(iterations) for key in KEYS]
    print(f"{len(rows):,} rows ({len(KEYS)} values per iteration); µs per row")
    print(f"{'path':<44} {'CPU':>7} {'wall':>7}")
    histories = {}
    for label, per_call in (("log_batch, 1,000 rows per call", 1000),
                            ("sqlite_metrics, 1,000 rows per transaction", 1000),
                            (f"sqlite_metrics, {LOCAL_ROWS_PER_WRITE:,} rows per transaction", LOCAL_ROWS_PER_WRITE)):
        with tempfile.TemporaryDirectory() as folder:
            uri, client, run_id = _fresh_run(Path(folder))
            if label.startswith("log_batch"):
                write = lambda chunk: client.log_batch(run_id, metrics=[Metric(*row) for row in chunk])  # noqa: E731
            else:
                bulk = sqlite_metrics.bulk_writer(uri)
                write = lambda chunk: bulk(run_id, chunk)  # noqa: E731
            cpu, wall = _timed(write, rows, per_call)
            histories[label] = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
                                for key in KEYS}
        print(f"{label:<44} {1e6 * cpu / len(rows):>7.1f} {1e6 * wall / len(rows):>7.1f}")
    first, *others = histories.values()
    print("stored rows identical on all paths:", all(other == first for other in others))


if __name__ == "__main__":
    main()
