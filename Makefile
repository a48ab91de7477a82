# Set-up and everyday commands. Every target creates the virtual environment first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Offline copies of MNIST and Fashion-MNIST next to the project are used when present; otherwise set
# HW1TRACK_MNIST_DIR and HW1TRACK_FASHION_MNIST_DIR.
HW1TRACK_MNIST_DIR ?= $(wildcard $(abspath ../shared/data/mnist))
HW1TRACK_FASHION_MNIST_DIR ?= $(wildcard $(abspath ../shared/data/fashion-mnist))
export HW1TRACK_MNIST_DIR HW1TRACK_FASHION_MNIST_DIR

.PHONY: setup browser demo full test ui bench bench-replicates bench-study clean-store

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the whole study on the quick preset, then every figure
	$(BIN)/hw1track run all --preset quick
	$(BIN)/hw1track analyze all

full: setup  ## the whole study at the homework's scale
	$(BIN)/hw1track run all --preset full
	$(BIN)/hw1track analyze all

browser:  ## Debian's Chromium for the UI test, installed with apt-get when /usr/bin/chromium is missing
	@test -x /usr/bin/chromium || sh scripts/install-chromium

test: setup browser
	$(BIN)/pytest -q

ui: setup  ## browse the local store at http://127.0.0.1:5000
	$(BIN)/hw1track ui

bench: setup  ## hw1track vs a notebook-style reference, W1-W4 side by side, into BENCHMARKS.md (about half an hour)
	$(BIN)/python benchmarks/vs_naive.py

PRESET ?= quick
bench-replicates: setup  ## each experiment at --seeds 1 vs --seeds k, side by side, into BENCHMARKS_REPLICATES.md
	$(BIN)/python benchmarks/replicates.py --preset $(PRESET)

EXECUTOR ?= local
bench-study: setup  ## the whole study as one run all (PRESET, EXECUTOR=local|ray, SEEDS=3 or 1,3): wall time and each experiment's span, into BENCHMARKS_STUDY.md
	$(BIN)/python benchmarks/study_time.py --preset $(PRESET) --executor $(EXECUTOR) $(if $(SEEDS),--seeds $(SEEDS))

clean-store:  ## delete the local tracking store (database and artifacts)
	rm -rf mlflow.db mlruns figures
