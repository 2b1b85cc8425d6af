# fusionbench — `make help` lists the targets. Everything installs itself into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKERS ?= 2
# `make test` runs in TEST_WORKERS pytest-xdist processes with one torch thread each: a test uses about one core
TEST_WORKERS ?= 2
STORE ?= results/mlflow.db
UI_PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help install test test-slow benchmark benchmark-extended benchmark-pretrain smoke ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install fusionbench with pinned dependencies (idempotent)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt timm  # no torchvision: see pyproject.toml
	touch $@

test: install ## run the test suite (CPU, a few minutes; TEST_WORKERS=2 processes, one torch thread each)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow: install ## run the slow tests too
	$(BIN)/python -m pytest -q

benchmark: install ## the default benchmark: every fusion × 3 seeds × joint/modsum, then results/leaderboard.*
	$(BIN)/fusionbench sweep --experiment experiments/benchmark.yaml --workers $(WORKERS) --leaderboard

benchmark-pretrain: install ## pretraining known answer: contrastive zorro / early × 3 seeds on paired, probes → results/pretrain_gain.csv
	$(BIN)/python benchmarks/pretrain_gain.py

benchmark-extended: install ## the extended tier: sync and robust blocks → results/extended/, the papers' ablations → results/ablations.*
	$(BIN)/fusionbench sweep --experiment experiments/benchmark-extended.yaml --workers $(WORKERS) --leaderboard --out results/extended
	$(BIN)/python benchmarks/ablations.py --workers $(WORKERS)

smoke: install ## one fast run of every config under experiments/ (no config rots)
	$(BIN)/python -m pytest -q tests/test_experiments_smoke.py

ui: install ## serve the MLflow UI on the store (STORE=results/mlflow.db, UI_PORT=5000); prints each experiment's runs view
	@$(BIN)/python -m fusionbench.tracking ui-links $(STORE) --port $(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(STORE)) --default-artifact-root $(dir $(abspath $(STORE)))mlartifacts --host 127.0.0.1 --port $(UI_PORT)

clean: ## remove generated data, caches and the MLflow store (keeps the committed example leaderboard)
	rm -rf data lightning_logs results/mlflow.db results/mlartifacts results/.locks .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
