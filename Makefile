# Quick start: `make demo`, `make test`. Both run `setup` first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Idempotent: rebuilt only when pyproject.toml changes. torch goes in first, pinned, so the
# CPU build on this machine's disk is used (the same pin gives GPU hosts the CUDA build).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/stylepress demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=10

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
