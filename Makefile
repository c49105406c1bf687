# Every target builds its own virtual environment first, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fmt bench load reliability clean venv

# `make bench memory sqlite` runs those suites: words after bench (or load) are its arguments,
# not targets of their own.
ifneq (,$(filter bench load,$(firstword $(MAKECMDGOALS))))
  SUITES := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
  ARGS += $(SUITES)
  $(eval $(SUITES):;@:)
endif

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m toolkit demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

# Throughput and tails under threads, processes and coroutines (about 4 minutes; --quick, --soak 600).
load: $(STAMP)
	$(BIN)/python -m benchmarks.load $(ARGS)

reliability: $(STAMP)
	$(BIN)/python -m pytest tests/reliability --reliability-report $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
