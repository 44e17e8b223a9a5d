# diffedit_lab — every command a user needs. `make install && make test` on a fresh machine.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: install test test-all test-real demo demo-sdft lint format bench bench-real smoke-real gpu-check mini clean

install:  ## fresh virtualenv with the pinned stack + dev tools (~2-3 min)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev,mini]'

test:  ## fast CPU tests (tiny models; slow/gpu tests excluded), two workers (pytest-xdist; each test is single-threaded)
	$(BIN)/python -m pytest -q -n 2

test-all:  ## everything that runs without a GPU: slow tests and the real-shape smoke tests included (CPU: ~24 min)
	$(BIN)/python -m pytest -q -m "not gpu"

test-real:  ## only the real-shape smoke runs, one per method family through the runner (CPU: ~10 min)
	$(BIN)/python -m pytest -q -m real

demo:  ## SDD end to end on tiny models + real sample photos (CPU, ~1 min); outputs/demo/runs/<time>/
	$(BIN)/python -m diffedit_lab experiment=demo

demo-sdft:  ## SDFT end to end on tiny models (CPU, ~20 s); outputs/sdft_demo/runs/<time>/
	$(BIN)/python -m diffedit_lab experiment=sdft_demo

lint:
	$(BIN)/ruff check diffedit_lab tests experiments
	$(BIN)/ruff format --check diffedit_lab tests experiments

format:
	$(BIN)/ruff format diffedit_lab tests experiments
	$(BIN)/ruff check --fix diffedit_lab tests experiments

bench:  ## speed benchmarks → bench/results.json (CPU tiny always; real sizes when a GPU is visible)
	$(BIN)/python -m experiments.bench.run --out bench/results.json

bench-real:  ## real sizes, random weights, on this CPU: edit latency, FLOP shares, step ratios (≈40 min) → bench/results-real.json
	$(BIN)/python -m experiments.bench.run --sizes real --out bench/results-real.json

smoke-real:  ## every paper preset end to end at REAL shapes, random weights, capped (CPU: ~1-2 h) → bench/results-smoke-real.json
	$(BIN)/python -m experiments.smoke.run --out bench/results-smoke-real.json

gpu-check:  ## on a lent GPU (~8 min): real-size bench suites + the presets at their GPU batch/precision → bench/results-gpu.json, bench/results-smoke-gpu.json
	$(BIN)/python -m experiments.smoke.gpu_check --bench-out bench/results-gpu.json --smoke-out bench/results-smoke-gpu.json

mini:  ## each paper's claim in miniature on real digits, trained here (CPU ≤ 60 min; resumable) → bench/results-mini.json, bench/mini/
	$(BIN)/python -m diffedit_lab.mini --root outputs/mini --out bench/results-mini.json --figures bench/mini

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
