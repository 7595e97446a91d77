# Every target bootstraps .venv (python3 -m venv + pip install -e '.[dev]') if it is missing.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sweeplab-installed

.PHONY: train test test-fast lint format ui bench docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install -e '.[dev]'
	@# sweeplab ships its own hydra/sweeper=optuna; the old plugin (optuna < 3) would shadow it
	@$(BIN)/python -m pip uninstall -y -q hydra-optuna-sweeper 2>/dev/null || true
	@touch $(STAMP)

## Train the default experiment (digits, MLP, Adam); extra Hydra overrides via ARGS="..."
train: $(STAMP)
	$(BIN)/sweeplab-train $(ARGS)

## Lint, then the whole test suite (CI runs exactly this): pytest-xdist, one worker more than
## cores, because end-to-end tests spend part of their time waiting on servers, clusters and signals
WORKERS ?= $(shell python3 -c "import os; print((os.cpu_count() or 1) + 1)")
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(WORKERS) $(PYTEST_ARGS)

## ruff: lint and formatting check (make format rewrites)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks conf experiments docs
	$(BIN)/ruff format --check src tests benchmarks conf experiments docs

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks conf experiments docs
	$(BIN)/ruff format src tests benchmarks conf experiments docs

## The inner loop: everything but the end-to-end tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "not slow" $(PYTEST_ARGS)

## The documentation site (docs/, mkdocs-material) into outputs/site, offline; --strict as in CI
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

## MLflow UI for the local store on 127.0.0.1
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port 5000

## Benchmarks (ratios, not pass/fail)
bench: $(STAMP)
	$(BIN)/python benchmarks/epoch_time.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/sweep_parallel.py
	$(BIN)/python benchmarks/rl_steps.py
	$(BIN)/python benchmarks/text_pipeline.py

clean:
	rm -rf outputs/runs outputs/multirun
