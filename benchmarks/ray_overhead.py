"""What `--executor ray` costs on one machine: the same `hw1track run` in-process and through a local Ray cluster.

    .venv/bin/python benchmarks/ray_overhead.py [--quick part1_3c_i] [--full part1_3c_i] [--full-set epochs=5]
                                                [--seeds 2] [--out BENCHMARKS_RAY.md]

Three comparisons, each of the real CLI in a subprocess, in a fresh working directory and SQLite store, so
that nothing is reused:

- (a) the `--quick` experiments (the whole quick study as one `hw1track run all` with `--quick all`, so
  that through Ray every experiment's tasks share the cluster) in-process (torch's default threads,
  replicates stacked where the run module can) against a Ray cluster with the same cores (`ray start
  --head --num-cpus <cores>`, one task per unit: a replicate, or one model of it where the experiment's
  models are independent; one CPU each);
- (b) the same for the `full` preset of the one `--full` experiment (shortened with `--full-set`, said in
  the output), where the Ray path's fixed costs are small against training: the target is ≤ 5 %;
- (c) the Ray path on the quick experiments with 1 and then 2 worker CPUs (`--num-cpus 1` vs `2`; on a
  2-core machine the 2-CPU time is (a)'s).

The cluster is started before the clock starts and stopped after each part; its start-up is timed on its
own. Every Ray command passes the cluster's address, so the times include the driver's connection to the
cluster, worker start-up (a fresh Python importing torch and hw1track per worker) and each task loading
MNIST, all of which the in-process run does once or not at all. MNIST is imported once into a shared data
root beforehand. Wall-clock seconds on a machine shared with other jobs are upper bounds, so the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicates import hw1track_command, publish  # noqa: E402
from vs_naive import cpu_model, sgemm_gflops  # noqa: E402

from hw1track.training.data import ROOT_ENV, SOURCE_ENV, load_mnist  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
TARGET_OVERHEAD = 0.05  # of the full preset's in-process time
SGEMM_SIZE = 2048
START_TIMEOUT = 120.0
# A loopback cluster needs no tokens (left unset, Ray turns them on once any earlier local cluster saved one),
# and reports to nobody.
CLUSTER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@contextmanager
def ray_cluster(cpus: int, env: dict[str, str], log: Path | None = None) -> Iterator[tuple[str, float]]:
    """`ray start --head --block --num-cpus <cpus>` on loopback; yields its address and seconds to answer.

    It runs in a folder and a session of its own, its output going to `log` (if given), and is stopped
    with SIGKILL to its process group: on SIGTERM `ray start --block` drains for 30 s first. The tests'
    cluster is this one too.
    """
    port = _free_port()
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address",
               LOOPBACK, "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard", "false",
               "--disable-usage-stats"]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder, open(log or os.devnull, "w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        try:
            while True:
                if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT:
                    said = log.read_text()[-3000:] if log else ""
                    raise RuntimeError(f"ray start did not answer on {port} (exit code {process.poll()}):\n{said}")
                try:
                    socket.create_connection((LOOPBACK, port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            yield f"{LOOPBACK}:{port}", time.perf_counter() - started
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
            time.sleep(2)  # its idle workers exit once the raylet is gone


def timed_run(experiment: str, preset: str, seeds: int, settings: list[str], env: dict[str, str],
              address: str | None = None) -> float:
    """Seconds of one `hw1track run`, in-process or (given an address) through Ray; raises if it fails."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{experiment}-") as folder:
        command = [*hw1track_command(), "run", experiment, "--preset", preset, "--seeds", str(seeds),
                   "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
        command += [arg for setting in settings for arg in ("--set", setting)]
        if address is not None:
            command += ["--executor", "ray", "--ray-address", address]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  {experiment} {preset} {'through Ray' if address else 'in-process'}: {seconds:.1f} s", flush=True)
    return seconds


def both_ways(experiments: list[str], preset: str, seeds: int, settings: list[str], env: dict[str, str],
              cpus: int) -> tuple[float, float, float]:
    """In-process and through a fresh `cpus`-CPU cluster: total seconds of each, and the cluster's start-up."""
    in_process = sum(timed_run(name, preset, seeds, settings, env) for name in experiments)
    with ray_cluster(cpus, env) as (address, start_up):
        through_ray = sum(timed_run(name, preset, seeds, settings, env, address) for name in experiments)
    return in_process, through_ray, start_up


def through_ray_with(cpus: int, experiments: list[str], seeds: int, env: dict[str, str]) -> float:
    with ray_cluster(cpus, env) as (address, _):
        return sum(timed_run(name, "quick", seeds, [], env, address) for name in experiments)


def load_line(label: str) -> str:
    one, five, _ = os.getloadavg()
    return f"load average {label}: {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", default="part1_3c_i", help="experiments of (a) and (c), comma-separated, or all")
    parser.add_argument("--full", default="part1_3c_i", help="the one experiment of (b), on its full preset")
    parser.add_argument("--full-set", action="append", default=[], metavar="KEY=VALUE",
                        help="shorten (b)'s full preset (repeatable), e.g. epochs=5")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS_RAY.md")
    args = parser.parse_args(argv)
    quick = ["all"] if args.quick == "all" else [name.strip() for name in args.quick.split(",")]
    cores = os.cpu_count() or 1

    lines = [f"CPU {cpu_model()}, {cores} logical cores; torch {torch.__version__}, "
             f"{torch.get_num_threads()} intra-op threads by default",
             f"sgemm peak {sgemm_gflops(SGEMM_SIZE, torch.get_num_threads()):.1f} GFLOP/s ({SGEMM_SIZE}², float32)",
             load_line("before")]
    load_before = os.getloadavg()[0]
    print("\n".join(lines), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-mnist-") as data_root:
        env = {**os.environ, **CLUSTER_ENV, ROOT_ENV: data_root, "PYTHONWARNINGS": "ignore"}
        if env.get(SOURCE_ENV):
            load_mnist(Path(data_root), env[SOURCE_ENV])  # imported once, outside every timed run
        loading = time.perf_counter()
        load_mnist(Path(data_root))
        mnist_seconds = time.perf_counter() - loading

        a = both_ways(quick, "quick", args.seeds, [], env, cores)
        print(f"(a) {args.quick} quick, seeds {args.seeds}: in-process {a[0]:.1f} s, Ray {a[1]:.1f} s "
              f"(cluster start-up {a[2]:.1f} s, not included); {load_line('now')}", flush=True)
        b = both_ways([args.full], "full", args.seeds, args.full_set, env, cores)
        print(f"(b) {args.full} full {' '.join(args.full_set)}, seeds {args.seeds}: in-process {b[0]:.1f} s, "
              f"Ray {b[1]:.1f} s; {load_line('now')}", flush=True)
        # with 2 cores, (a)'s cluster is the 2-CPU one: its time is not measured twice
        c = {cpus: a[1] if cpus == cores else through_ray_with(cpus, quick, args.seeds, env) for cpus in (1, 2)}
        print(f"(c) {args.quick} quick through Ray: 1 CPU {c[1]:.1f} s, 2 CPUs {c[2]:.1f} s; {load_line('now')}",
              flush=True)
    lines.append(load_line("after"))
    shortened = f" with `--set {' --set '.join(args.full_set)}`" if args.full_set else ""
    overhead = b[1] / b[0] - 1
    busiest = max(load_before, os.getloadavg()[0])
    # above the core count, in-process torch threads wait for cores that tasks of one thread each do not need
    verdict = (("met" if overhead <= TARGET_OVERHEAD else "missed") if busiest <= cores
               else f"not judged, load {busiest:.1f} above {cores} cores")
    text = "\n".join([
        "# What `--executor ray` costs on one machine",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `python benchmarks/ray_overhead.py --quick {args.quick} "
        f"--full {args.full}{''.join(f' --full-set {s}' for s in args.full_set)} --seeds {args.seeds}` "
        f"({time.perf_counter() - started:.0f} s in all). Each time is one `hw1track run` per experiment, or one "
        "`hw1track run all` (start-up included), in a fresh working directory and SQLite store; through Ray it "
        "connects to a loopback cluster started before the clock (`ray start --head --num-cpus N`), one task "
        "per unit (a replicate, or one model of it where the experiment's models are independent).",
        "",
        *[f"- {line}" for line in lines],
        f"- loading MNIST (60,000 + 10,000 images, from the shared data root) takes {mnist_seconds:.2f} s: "
        "once per command in-process, once per task through Ray",
        "",
        "| comparison | in-process (s) | through Ray (s) | Ray ÷ in-process | note |",
        "| --- | --- | --- | --- | --- |",
        f"| (a) {args.quick}, quick, seeds {args.seeds}, {cores} cores | {a[0]:.1f} | {a[1]:.1f} | "
        f"{a[1] / a[0]:.2f} × | cluster start-up {a[2]:.1f} s, not included |",
        f"| (b) {args.full}, full{shortened}, seeds {args.seeds}, {cores} cores | {b[0]:.1f} | {b[1]:.1f} | "
        f"{b[1] / b[0]:.2f} × | overhead {100 * overhead:+.1f} %, target ≤ {100 * TARGET_OVERHEAD:.0f} %: "
        f"{verdict} |",
        f"| (c) {args.quick}, quick, seeds {args.seeds}, through Ray | 1 CPU: {c[1]:.1f} | 2 CPUs: {c[2]:.1f} | "
        f"{c[2] / c[1]:.2f} × | speed-up {c[1] / c[2]:.2f} × from 1 to 2 worker CPUs"
        f"{' (2 CPUs: the time of (a))' if cores == 2 else ''} |",
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
