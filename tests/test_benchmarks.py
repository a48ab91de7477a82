"""The benchmarks run end to end and print what they promise (speed is measured, never asserted)."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

from hw1track.tracking.query import StoreReader

COLUMNS = ["reference (s)", "hw1track (s)", "ratio", "steps (reference / hw1track)"]


@pytest.mark.slow
def test_vs_naive_quick_writes_a_table_with_both_sides_and_equal_steps(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vs_naive.py"), "--scale", "quick",
                           "--workloads", "W1,W4", "--threads", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in out.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert all(column in header for column in COLUMNS), header
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    assert [row["workload"][:2] for row in rows] == ["W1", "W4", "W4"]
    for row in rows:
        assert float(row["reference (s)"]) > 0 and float(row["hw1track (s)"]) > 0
        reference_steps, hw1track_steps = (int(n.replace(",", "")) for n in row["steps (reference / hw1track)"].split("/"))
        assert reference_steps == hw1track_steps > 0
    assert "sgemm peak" in rows[0]["notes"] and "GFLOP/s" in rows[0]["notes"]
    # the overhead row also accounts tracking's own time inside the tracked run: starting, logging, ending
    accounted = rows[1]["notes"].split("accounted inside the tracked runs (median): ")[1].split(" %")[0]
    assert float(accounted) > 0


def test_metric_rows_benchmark_stores_the_same_rows_on_every_path(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "metric_rows.py"), "400"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(",")[0] for line in lines[2:5]] == ["log_batch", "sqlite_metrics", "sqlite_metrics"]
    assert lines[-1] == "stored rows identical on all paths: True"


@pytest.mark.slow
def test_replicates_benchmark_times_both_seed_counts_of_each_experiment(tmp_path):
    out = tmp_path / "BENCHMARKS_REPLICATES.md"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "replicates.py"), "--preset", "quick",
                           "--experiments", "part1_3c_i", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in out.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["experiment", "seeds=1 (s)", "seeds=2 (s)", "ratio", "target"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in rows] == ["part1_3c_i", "**total**"]
    assert float(rows[0][1]) > 0 and float(rows[0][2]) > 0
    assert "whole study" in rows[1][4]  # one experiment is not the study: its ratio is not judged against the target
    assert "sgemm peak" in out.read_text() and "load average" in out.read_text()


@pytest.mark.slow
def test_ray_overhead_benchmark_times_each_comparison_on_both_paths(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "BENCHMARKS_RAY.md"
    shortened = [arg for setting in ("epochs=1", "train_size=600", "test_size=200", "surface_examples=32")
                 for arg in ("--full-set", setting)]
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ray_overhead.py"), "--quick", "part1_3b",
                           "--full", "part1_3c_i", *shortened, "--seeds", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["comparison", "in-process (s)", "through Ray (s)", "Ray ÷ in-process", "note"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0].split(")")[0] for row in rows] == ["(a", "(b", "(c"]
    for row in rows[:2]:
        assert float(row[1]) > 0 and float(row[2]) > 0
    assert float(rows[2][1].removeprefix("1 CPU: ")) > 0 and float(rows[2][2].removeprefix("2 CPUs: ")) > 0
    assert "with `--set epochs=1 --set train_size=600" in rows[1][0]  # a shortened preset says so
    assert "sgemm peak" in text and "load average before" in text and "load average after" in text


@pytest.mark.slow
def test_study_time_benchmark_reads_each_experiments_span_back_from_the_stores_it_timed(tmp_path):
    out, kept = tmp_path / "BENCHMARKS_STUDY.md", tmp_path / "kept"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_time.py"), "--preset", "quick",
                           "--seeds", "1,2", "--experiment", "part1_3c_i", "--keep-store", str(kept),
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")][2:]
    assert [row[0] for row in rows] == ["part1_3c_i", "**all**"]
    spans, walls = [float(rows[0][1]), float(rows[0][3])], [float(rows[1][i].removesuffix(" (wall)")) for i in (1, 3)]
    for seeds, span, wall, models in zip((1, 2), spans, walls, (rows[0][2], rows[0][4])):
        assert 0 < span < wall  # the parent's span lies within the command's wall time
        store = StoreReader(f"sqlite:///{kept / f'seeds-{seeds}' / 'mlflow.db'}")  # each seed count its own store
        (parent,) = store.parents("part1_3c_i")
        assert int(models) == len(store.children(parent)) > 0
    assert int(rows[0][4]) == 2 * int(rows[0][2])  # the second seed count trained twice the models
    # in-process the spans follow one another, so the experiment has a ratio of its own, beside the wall times'
    ratios = [float(row[5].removesuffix(" ×")) for row in rows]  # from unrounded times; the cells are rounded
    assert ratios == pytest.approx([spans[1] / spans[0], walls[1] / walls[0]], rel=0.03)
    # the summary line rounds the unrounded walls to whole seconds, the cells to tenths: compare within both roundings
    summary = re.search(r"seeds 2 ÷ seeds 1: (\d+) s ÷ (\d+) s", text)
    assert summary, text
    assert [int(summary[1]), int(summary[2])] == pytest.approx([walls[1], walls[0]], abs=0.55)
    assert "sgemm peak" in text and "scaled to a 400 GFLOP/s machine" in text
    assert "budget" not in text and "target" not in text  # both targets are the full study's, not a part's


def test_study_time_benchmark_refuses_seed_counts_it_cannot_time(tmp_path):
    for bad in ("0", "3,3", "one"):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_time.py"), "--seeds", bad],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "--seeds" in done.stderr.splitlines()[-1]


def test_system_metrics_cost_benchmark_samples_only_with_the_monitor_on(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "system_metrics_cost.py"), "--seconds", "2",
                           "--rounds", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    on, off, summary = done.stdout.strip().splitlines()[-3:]
    # a run shorter than one interval still gets the sample of the interval it ends in; with the monitor off, none
    assert on.startswith("monitor on ") and not on.endswith(" 0 samples")
    assert off.startswith("monitor off") and off.endswith(" 0 samples")
    assert summary.startswith("the monitor's CPU time:") and "% of one core" in summary
