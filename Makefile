# Quick start: `make demo`, `make test`. Both run `setup` first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system demo test lint clean

setup: $(STAMP) system

# System packages tests use: nginx (the serving proxy). Installed when missing and run as root.
system:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { test "$$(id -u)" = 0 && \
		{ apt-get install -y -q nginx-light >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q nginx-light >/dev/null; }; }; } || \
		echo "nginx is missing and this is not root: install Debian's nginx-light for the proxy tests"

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
