# Quick start: `make demo`, `make test`. Both run `setup` first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system demo test lint clean

setup: $(STAMP) system

# System packages the tests use, installed when missing and run as root (Debian): nginx (the serving
# proxy), chromium (the report renders in a real browser), prometheus (promtool and a live server).
SYSTEM_PACKAGES := nginx-light:nginx chromium:chromium prometheus:promtool
system:
	@for entry in $(SYSTEM_PACKAGES); do pkg=$${entry%%:*}; cmd=$${entry##*:}; \
	  command -v $$cmd >/dev/null || test -x /usr/sbin/$$cmd || { test "$$(id -u)" = 0 && \
	    { apt-get install -y -q $$pkg >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q $$pkg >/dev/null; }; }; } || \
	    echo "$$pkg is missing and this is not root: install Debian's $$pkg for the tests that use it"; \
	done

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
