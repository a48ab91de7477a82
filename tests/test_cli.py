"""The command line as a user runs it: run, analyze from a fresh process, list, and bad input."""

import subprocess
import sys

import pytest
from conftest import hw1track

from hw1track.tracking.query import StoreReader


@pytest.mark.slow
def test_run_then_analyze_from_a_fresh_process(tmp_path):
    done = hw1track("run", "part1_1a", "--preset", "quick", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns" / "part1_1a").is_dir()

    drawn = hw1track("analyze", "part1_1a", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    names = {"loss_sinc.png", "loss_sgn.png", "predictions_sinc.png", "predictions_sgn.png"}
    assert {p.name for p in (tmp_path / "figures" / "part1_1a").iterdir()} == names
    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = reader.latest_parent("part1_1a")
    logged = {a.path for a in reader.client.list_artifacts(parent.info.run_id, "figures")}
    assert logged == {f"figures/{name}" for name in names}

    listed = hw1track("list", cwd=tmp_path)
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith("part1_1a"))
    assert "finished (quick" in line


@pytest.mark.parametrize("args, message", [
    (["run", "part9"], "unknown experiment 'part9'"),
    (["run", "part1_1a", "--set", "epoch=3"], "unknown setting 'epoch'"),
    (["run", "part1_1a", "--set", "epochs=0"], "epochs must be > 0"),
    (["run", "part1_1a", "--set", "lr=fast"], "lr='fast': expected a float"),
    (["run", "part1_1a", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "part1_1a", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "part1_1a", "--bogus"], "No such option '--bogus'"),
    (["run", "all", "--set", "widht=10"], "unknown setting 'widht'"),
    (["run", "part1_1a", "--set", "epochs=-3"], "epochs must be > 0"),
    (["run", "part1_1a", "--set", "epochs=2.5"], "epochs='2.5': expected a int"),
    (["run", "part1_1a", "--set", "lr=0"], "lr must be > 0"),
    (["run", "part1_1a", "--set", "lr=nan"], "lr must be a finite number"),
    (["run", "part1_1b", "--set", "batch_size=0"], "batch_size must be > 0"),
    (["run", "part1_3c_ii", "--set", "batch_sizes=10,-385"], "batch_sizes must be > 0"),
    (["run", "part1_3b", "--set", "widths="], "widths must not be empty"),
    (["run", "part1_3c_i", "--set", "epochs=99999999999999999999"], "epochs=99999999999999999999 is too large"),
    (["run", "part1_3c_i", "--seed", "99999999999999999999"], "seed=99999999999999999999 is too large"),
    (["run", "part1_3c_i", "--seed", "4294967296"], "seed must be <= 4,294,967,295"),
    (["run", "part1_3b", "--set", "widths=4,99999999999999999999"], "widths=99999999999999999999 is too large"),
    (["run", "part1_3c_i", "--threads", "99999999999"], "is not in the range 1<=x<=1024"),
    (["analyze", "part1_1a"], "no finished run of part1_1a"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_store(tmp_path, args, message):
    done = hw1track(*args, cwd=tmp_path)
    assert done.returncode == (1 if args[0] == "analyze" else 2), done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr and done.stderr.startswith("hw1track: error:")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_model_too_large_for_memory_ends_its_runs_failed_in_one_line(tmp_path):
    done = hw1track("run", "part1_3b", "--seeds", "1", "--set", "widths=99999999999", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("hw1track: error: part1_3b: out of memory on cpu (asked for ")
    assert done.stderr.count("\n") == 1 and "GiB); lower the sizes" in done.stderr
    reader = StoreReader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = reader.client.search_runs([reader.store.experiment_id("part1_3b")])
    assert runs and {run.info.status for run in runs} == {"FAILED"}


def test_missing_mnist_fails_before_touching_the_store(tmp_path):
    done = hw1track("run", "part1_1b", "--mnist-dir", str(tmp_path / "nowhere"), cwd=tmp_path,
                    env={"HW1TRACK_DATA_ROOT": str(tmp_path / "empty-root")})
    assert done.returncode == 1
    assert "does not exist; set HW1TRACK_MNIST_DIR" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_the_command_line_flushes_denormals_in_every_torch_thread():
    # Products of denormals, computed across torch's thread pool, come out 0 only with denormals flushed.
    script = ("import torch\n"
              "from hw1track.cli import main\n"
              "main(['--help'])\n"
              "torch.set_num_threads(2)\n"
              "tiny = torch.full((1 << 22,), 1e-40)\n"
              "print('flushed' if (tiny * 2).count_nonzero().item() == 0 else 'kept')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "flushed"
