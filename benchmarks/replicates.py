"""What replicates cost: `hw1track run <exp> --seeds 1` against `--seeds k`, side by side in one process.

    .venv/bin/python benchmarks/replicates.py [--preset quick|full] [--experiments part1_1a,part1_2b]
                                              [--seeds-k K] [--rounds N] [--out BENCHMARKS_REPLICATES.md]
                                              [--keep-store DIR]

Every invocation is the real CLI in a subprocess, in a fresh temporary working directory with its own
fresh SQLite store, so nothing is reused between them. The two seed counts of one experiment run one right
after the other (alternating which goes first from round to round), so that a stretch of machine noise
hits both rather than one; with several rounds the fastest time of each is kept. MNIST is imported once
into a shared data root before the clock starts. The study's target is a ratio of at most 2.5 × for the
whole study at k = 3 (the full preset's default): replicates that cost less than separate runs would.
Times are wall-clock seconds of the whole invocation (start-up, training, logging); on a machine shared
with other jobs they are upper bounds, so the load average is printed with them. With `--keep-store DIR`
the seeds = k side logs into one store in DIR that outlives the benchmark (every experiment has its own
parent runs there, so sharing it reuses nothing): `hw1track analyze all` run in DIR then gives the claims
of the study that was timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_naive import cpu_model, sgemm_gflops  # noqa: E402

from hw1track.study.discovery import discover  # noqa: E402
from hw1track.study.replicates import default_seeds  # noqa: E402
from hw1track.training.data import ROOT_ENV, SOURCE_ENV, load_mnist  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python benchmarks/replicates.py"
TARGET_RATIO, TARGET_K = 2.5, 3
SGEMM_SIZE = 2048


def hw1track_command() -> list[str]:
    """The CLI of the interpreter running this script (the project's venv), else whatever is on PATH."""
    beside = Path(sys.executable).parent / "hw1track"
    return [str(beside)] if beside.exists() else [shutil.which("hw1track") or "hw1track"]


def publish(text: str, out: Path) -> None:
    """Show the report and keep it in `out`, the file the README points at."""
    print()
    print(text)
    out.write_text(text)
    print(f"written to {out}")


def timed_run(experiment: str, preset: str, seeds: int, env: dict[str, str], kept: Path | None = None) -> float:
    """Seconds of one `hw1track run` in a fresh working directory and store (or in `kept`, a folder that
    stays); raises if it fails."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{experiment}-s{seeds}-") as folder:
        where = kept or Path(folder)
        command = [*hw1track_command(), "run", experiment, "--preset", preset, "--seeds", str(seeds),
                   "--tracking-uri", f"sqlite:///{where / 'mlflow.db'}"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def ratio_cell(ratio: float, k: int, total: bool, whole_study: bool) -> str:
    if not total:
        return ""
    if not whole_study:
        return f"≤ {TARGET_RATIO} × is for the whole study (not measured here: a subset)"
    if k != TARGET_K:
        return f"≤ {TARGET_RATIO} × at k = {TARGET_K} (not measured here: k = {k})"
    return f"≤ {TARGET_RATIO} ×: {'met' if ratio <= TARGET_RATIO else 'missed'}"


def table(times: dict[str, tuple[float, float]], k: int) -> str:
    whole_study = set(times) == set(discover())
    columns = ["experiment", "seeds=1 (s)", f"seeds={k} (s)", "ratio", "target"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    rows = [(name, one, many, False) for name, (one, many) in times.items()]
    rows.append(("**total**", sum(one for one, _ in times.values()), sum(many for _, many in times.values()), True))
    for name, one, many, total in rows:
        target = ratio_cell(many / one, k, total, whole_study)
        lines.append(f"| {name} | {one:.1f} | {many:.1f} | {many / one:.2f} × | {target} |")
    return "\n".join(lines)


def report(times: dict[str, tuple[float, float]], args, loads: tuple[float, float], peak: float,
           seconds: float) -> str:
    command = f"{COMMAND} --preset {args.preset} --seeds-k {args.seeds_k} --rounds {args.rounds}"
    if args.experiments_given:
        command += f" --experiments {','.join(times)}"
    return "\n".join([
        "# What replicates cost: seeds = 1 against seeds = k",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `{command}` ({seconds:.0f} s in all). Each time is one "
        "`hw1track run` (start-up included) in a fresh working directory and store; the two seed counts of an "
        "experiment ran back to back, fastest of the rounds kept. The ratio is seeds = k ÷ seeds = 1; the "
        f"target is ≤ {TARGET_RATIO} × for the whole study at k = {TARGET_K}.",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s) by default; Python {platform.python_version()}",
        f"- sgemm peak {peak:.1f} GFLOP/s ({SGEMM_SIZE}², float32, measured at the start)",
        f"- load average (1 min) {loads[0]:.2f} at the start, {loads[1]:.2f} at the end: a load above the core "
        "count means other jobs shared the cores, and the times are upper bounds",
        "",
        table(times, args.seeds_k),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "full"), default="quick")
    parser.add_argument("--experiments", default=None, type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
                        help="comma-separated experiment names (default: all of them)")
    parser.add_argument("--seeds-k", type=int, default=None, help="the replicated side (default: quick 2, full 3)")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of each pair, the fastest of each side kept")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS_REPLICATES.md")
    parser.add_argument("--keep-store", type=Path, default=None, metavar="DIR",
                        help="log the seeds = k runs into DIR/mlflow.db and keep it (DIR must not hold a store yet)")
    args = parser.parse_args(argv)
    if args.keep_store is not None:
        if (args.keep_store / "mlflow.db").exists():
            parser.error(f"{args.keep_store} already holds a store: its runs would be reused, not timed")
        args.keep_store = args.keep_store.resolve()
        args.keep_store.mkdir(parents=True, exist_ok=True)
    known = list(discover())
    args.experiments_given = args.experiments is not None
    experiments = args.experiments or known
    unknown = [name for name in experiments if name not in known]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)} (known: {', '.join(known)})")
    args.seeds_k = args.seeds_k or default_seeds(args.preset)

    load_before = os.getloadavg()[0]
    peak = sgemm_gflops(SGEMM_SIZE, torch.get_num_threads())
    print(f"CPU {cpu_model()}, {os.cpu_count()} cores, load {load_before:.2f}, sgemm peak {peak:.1f} GFLOP/s",
          flush=True)
    started = time.perf_counter()
    times: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mnist-") as data_root:
        env = {**os.environ, ROOT_ENV: data_root, "PYTHONWARNINGS": "ignore"}
        if env.get(SOURCE_ENV):
            load_mnist(Path(data_root), env[SOURCE_ENV])  # imported once, outside every timed run
        for name in experiments:
            best = {1: float("inf"), args.seeds_k: float("inf")}
            for round_ in range(args.rounds):
                order = (1, args.seeds_k) if round_ % 2 == 0 else (args.seeds_k, 1)
                for seeds in order:
                    kept = args.keep_store if seeds == args.seeds_k and round_ == 0 else None
                    best[seeds] = min(best[seeds], timed_run(name, args.preset, seeds, env, kept))
            times[name] = (best[1], best[args.seeds_k])
            print(f"{name}: seeds=1 {best[1]:.1f} s, seeds={args.seeds_k} {best[args.seeds_k]:.1f} s, "
                  f"ratio {best[args.seeds_k] / best[1]:.2f}, load {os.getloadavg()[0]:.2f}", flush=True)
    text = report(times, args, (load_before, os.getloadavg()[0]), peak, time.perf_counter() - started)
    publish(text, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
