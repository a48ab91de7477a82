"""How long the whole study takes: one `hw1track run all`, in-process or through a Ray cluster on this machine.

    .venv/bin/python benchmarks/study_time.py [--preset full] [--seeds 3] [--executor local|ray]
                                              [--experiment all] [--keep-store DIR] [--out BENCHMARKS_STUDY.md]

The seeds issue's budget is the full study at its default 3 seeds in at most 45 minutes on a 2-core
machine whose sgemm peak is about 400 GFLOP/s. Machines of this kind differ (the AMD EPYC ones measure
about 190 GFLOP/s), so the measured peak and CPU model are printed beside the time, with the time that
peak would scale to at 400 GFLOP/s: a projection, labelled as one, for compute-bound work.

The command is the real CLI in a subprocess, in a fresh working directory and SQLite store, so nothing
is reused; with `--executor ray` it starts a Ray cluster of this machine's cores for itself (start-up
included in the time). The breakdown per experiment is read back from the store through the MLflow API:
each parent run's span (start to end) and how many models it trained. In-process the spans follow one
another and add up to the wall time; through Ray every experiment's tasks are queued at once and share
the cluster, so the spans overlap and say when each experiment's last task ended. (Children's durations
are not added up: side by side in one stack, each child lasts as long as the whole stack.)
`--keep-store DIR` keeps the store (for `hw1track analyze all` on the study that was timed).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicates import hw1track_command, publish  # noqa: E402
from vs_naive import cpu_model, sgemm_gflops  # noqa: E402

from hw1track.study.discovery import discover  # noqa: E402
from hw1track.study.replicates import default_seeds  # noqa: E402
from hw1track.tracking.names import TAG_ROLE  # noqa: E402
from hw1track.tracking.query import StoreReader  # noqa: E402
from hw1track.training.data import ROOT_ENV, SOURCE_ENV, load_mnist  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BUDGET_SECONDS, BUDGET_PEAK = 45 * 60, 400.0  # the seeds issue's budget, and the machine it is set on
SGEMM_SIZE = 2048


def timed_run(experiment: str, preset: str, seeds: int, executor: str, where: Path, env: dict[str, str]) -> float:
    """Seconds of `hw1track run <experiment>` logging to `where`/mlflow.db; raises if it fails."""
    command = [*hw1track_command(), "run", experiment, "--preset", preset, "--seeds", str(seeds),
               "--executor", executor, "--tracking-uri", f"sqlite:///{where / 'mlflow.db'}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def breakdown(uri: str, experiments: list[str]) -> list[tuple[str, float, int]]:
    """Per experiment: its parent's span (s) and how many models it trained."""
    store = StoreReader(uri)
    rows = []
    for name in experiments:
        (parent,) = store.parents(name)
        children = store.children(parent)
        trained = [run for run in children if run.data.tags.get(TAG_ROLE) == "child"]
        rows.append((name, (parent.info.end_time - parent.info.start_time) / 1000, len(trained)))
    return rows


def report(args, wall: float, rows: list[tuple[str, float, int]], peak: float, loads: tuple[float, float]) -> str:
    projected = wall * peak / BUDGET_PEAK
    budgeted = args.experiment == "all" and args.preset == "full" and args.seeds == default_seeds("full")
    verdict = (f", {'within' if projected <= BUDGET_SECONDS else 'over'} the budget of {BUDGET_SECONDS // 60} min"
               if budgeted else "")
    lines = [
        f"## {'The' if args.experiment == 'all' else args.experiment + ' of the'} {args.preset} study, "
        f"seeds {args.seeds}, executor {args.executor}",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/study_time.py --preset {args.preset} "
        f"--seeds {args.seeds} --executor {args.executor} --experiment {args.experiment}`: one "
        f"`hw1track run {args.experiment}` in a fresh working directory "
        "and SQLite store, start-up included.",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads by default; Python {platform.python_version()}",
        f"- sgemm peak {peak:.1f} GFLOP/s ({SGEMM_SIZE}², float32, measured at the start)",
        f"- load average (1 min) {loads[0]:.2f} at the start, {loads[1]:.2f} at the end, on "
        f"{os.cpu_count()} cores: above the core count, other jobs shared the cores and the time is an upper bound",
        f"- **wall time {wall:.0f} s ({wall / 60:.1f} min)**; scaled to a {BUDGET_PEAK:.0f} GFLOP/s machine by "
        f"sgemm peak (a projection): {projected / 60:.1f} min{verdict}",
        "",
        "| experiment | parent's span (s) | models trained |",
        "| --- | --- | --- |",
        *[f"| {name} | {span:.1f} | {count} |" for name, span, count in rows],
        f"| **all** | {wall:.1f} (wall) | {sum(count for *_, count in rows)} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "full"), default="full")
    parser.add_argument("--seeds", type=int, default=None, help="replicates (default: the preset's)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--experiment", default="all", help="one experiment instead of the study (a shorter check)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS_STUDY.md")
    parser.add_argument("--keep-store", type=Path, default=None, metavar="DIR",
                        help="log into DIR/mlflow.db and keep it (DIR must not hold a store yet)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or default_seeds(args.preset)
    known = list(discover())
    if args.experiment != "all" and args.experiment not in known:
        parser.error(f"unknown experiment {args.experiment} (known: {', '.join(known)})")
    if args.keep_store is not None and (args.keep_store / "mlflow.db").exists():
        parser.error(f"{args.keep_store} already holds a store: its runs would be reused, not timed")

    load_before = os.getloadavg()[0]
    peak = sgemm_gflops(SGEMM_SIZE, torch.get_num_threads())
    print(f"CPU {cpu_model()}, {os.cpu_count()} cores, load {load_before:.2f}, sgemm peak {peak:.1f} GFLOP/s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-study-") as folder:
        where = args.keep_store.resolve() if args.keep_store else Path(folder) / "study"
        where.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, ROOT_ENV: str(Path(folder) / "data"), "PYTHONWARNINGS": "ignore",
               "RAY_USAGE_STATS_ENABLED": "0"}
        if env.get(SOURCE_ENV):
            load_mnist(Path(env[ROOT_ENV]), env[SOURCE_ENV])  # imported once, before the clock starts
        wall = timed_run(args.experiment, args.preset, args.seeds, args.executor, where, env)
        rows = breakdown(f"sqlite:///{where / 'mlflow.db'}", known if args.experiment == "all" else [args.experiment])
    text = report(args, wall, rows, peak, (load_before, os.getloadavg()[0]))
    publish(text, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
