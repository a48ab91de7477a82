"""How long the whole study takes: one `hw1track run all`, in-process or through a Ray cluster on this machine.

    .venv/bin/python benchmarks/study_time.py [--preset full] [--seeds 3 | --seeds 1,3] [--executor local|ray]
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

`--seeds 1,3` times the study once per seed count, one right after the other in fresh stores, and
divides: the seeds issue's second target is the full study at 3 seeds costing at most 2.5 × the
single-seed study, measured side by side on one machine, which two separate invocations on a shared
machine are not. In-process, each experiment's spans give its own ratio; through Ray they overlap, and
only the wall times divide.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicates import TARGET_K, TARGET_RATIO, hw1track_command, publish  # noqa: E402
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


@dataclass(frozen=True)
class Timing:
    """One `hw1track run` of the study at one seed count."""

    seeds: int
    wall: float  # seconds
    rows: list[tuple[str, float, int]]  # per experiment: its parent's span (s) and models trained
    loads: tuple[float, float]  # 1-minute load average at the start and at the end


def full_study(args) -> bool:
    """The seeds issue's targets are set on the whole study at the full preset, not on a part of it."""
    return args.experiment == "all" and args.preset == "full"


def budget_verdict(args, timing: Timing, peak: float) -> str:
    if not (full_study(args) and timing.seeds == TARGET_K):
        return ""
    within = timing.wall * peak / BUDGET_PEAK <= BUDGET_SECONDS
    return f", {'within' if within else 'over'} the budget of {BUDGET_SECONDS // 60} min"


def ratio_lines(args, timings: list[Timing]) -> list[str]:
    """Each seed count's wall time over the first's, with the 2.5 × target where it applies."""
    first, lines = timings[0], []
    for timing in timings[1:]:
        ratio = timing.wall / first.wall
        judged = full_study(args) and first.seeds == 1 and timing.seeds == TARGET_K
        target = f" (target ≤ {TARGET_RATIO} ×: {'met' if ratio <= TARGET_RATIO else 'missed'})" if judged else ""
        lines.append(f"- **seeds {timing.seeds} ÷ seeds {first.seeds}: {timing.wall:.0f} s ÷ {first.wall:.0f} s = "
                     f"{ratio:.2f} ×**{target}, measured back to back in this one invocation")
    return lines


def table(args, timings: list[Timing]) -> list[str]:
    first, last = timings[0], timings[-1]
    ratios = len(timings) > 1 and args.executor == "local"  # through Ray the spans overlap and do not divide
    columns = ["experiment"]
    for timing in timings:
        columns += [f"span at seeds {timing.seeds} (s)", f"models at seeds {timing.seeds}"]
    if ratios:
        columns.append(f"ratio seeds {last.seeds} ÷ {first.seeds}")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for i, (name, *_) in enumerate(first.rows):
        cells = [name]
        for timing in timings:
            _, span, models = timing.rows[i]
            cells += [f"{span:.1f}", str(models)]
        if ratios:
            cells.append(f"{last.rows[i][1] / first.rows[i][1]:.2f} ×")
        lines.append("| " + " | ".join(cells) + " |")
    total = ["**all**"]
    for timing in timings:
        total += [f"{timing.wall:.1f} (wall)", str(sum(models for *_, models in timing.rows))]
    if ratios:
        total.append(f"{last.wall / first.wall:.2f} ×")
    lines.append("| " + " | ".join(total) + " |")
    return lines


def report(args, timings: list[Timing], peak: float) -> str:
    seeds_text = ",".join(str(timing.seeds) for timing in timings)
    lines = [
        f"## {'The' if args.experiment == 'all' else args.experiment + ' of the'} {args.preset} study, "
        f"seeds {seeds_text}, executor {args.executor}",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/study_time.py --preset {args.preset} "
        f"--seeds {seeds_text} --executor {args.executor} --experiment {args.experiment}`: "
        f"{'one' if len(timings) == 1 else 'per seed count, one'} `hw1track run {args.experiment}` in a fresh "
        "working directory and SQLite store, start-up included"
        f"{'' if len(timings) == 1 else ', the seed counts one right after the other'}.",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads by default; Python {platform.python_version()}",
        f"- sgemm peak {peak:.1f} GFLOP/s ({SGEMM_SIZE}², float32, measured at the start)",
    ]
    for timing in timings:
        (start, end), wall = timing.loads, timing.wall
        lines.append(
            f"- seeds {timing.seeds}: load average (1 min) {start:.2f} at the start, {end:.2f} at the end, on "
            f"{os.cpu_count()} cores (above the core count, other jobs shared the cores and the time is an upper "
            f"bound); **wall time {wall:.0f} s ({wall / 60:.1f} min)**; scaled to a {BUDGET_PEAK:.0f} GFLOP/s "
            f"machine by sgemm peak (a projection): {wall * peak / BUDGET_PEAK / 60:.1f} min"
            f"{budget_verdict(args, timing, peak)}")
    lines += [*ratio_lines(args, timings), "", *table(args, timings), ""]
    return "\n".join(lines)


def seed_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"expected distinct positive seed counts like 3 or 1,3, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "full"), default="full")
    parser.add_argument("--seeds", type=seed_counts, default=None,
                        help="replicates (default: the preset's); several, comma-separated, are timed back to back")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--experiment", default="all", help="one experiment instead of the study (a shorter check)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS_STUDY.md")
    parser.add_argument("--keep-store", type=Path, default=None, metavar="DIR",
                        help="log into DIR/mlflow.db (DIR/seeds-K/mlflow.db for several seed counts) and keep it")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or [default_seeds(args.preset)]
    known = list(discover())
    if args.experiment != "all" and args.experiment not in known:
        parser.error(f"unknown experiment {args.experiment} (known: {', '.join(known)})")
    if args.keep_store is not None and any(args.keep_store.rglob("mlflow.db")):
        parser.error(f"{args.keep_store} already holds a store: its runs would be reused, not timed")

    peak = sgemm_gflops(SGEMM_SIZE, torch.get_num_threads())
    print(f"CPU {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, sgemm peak {peak:.1f} GFLOP/s",
          flush=True)
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="bench-study-") as folder:
        env = {**os.environ, ROOT_ENV: str(Path(folder) / "data"), "PYTHONWARNINGS": "ignore",
               "RAY_USAGE_STATS_ENABLED": "0"}
        if env.get(SOURCE_ENV):
            load_mnist(Path(env[ROOT_ENV]), env[SOURCE_ENV])  # imported once, before the clock starts
        for seeds in args.seeds:
            base = args.keep_store.resolve() if args.keep_store else Path(folder)
            where = base / f"seeds-{seeds}" if len(args.seeds) > 1 or not args.keep_store else base
            where.mkdir(parents=True, exist_ok=True)
            load_before = os.getloadavg()[0]
            wall = timed_run(args.experiment, args.preset, seeds, args.executor, where, env)
            rows = breakdown(f"sqlite:///{where / 'mlflow.db'}",
                             known if args.experiment == "all" else [args.experiment])
            timings.append(Timing(seeds, wall, rows, (load_before, os.getloadavg()[0])))
            print(f"seeds {seeds}: {wall:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    publish(report(args, timings, peak), args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
