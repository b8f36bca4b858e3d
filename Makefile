# The two entry points of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test bench lint clean demo

serve: $(VENV)/.installed
	$(BIN)/pushup serve

# The chat demo (examples/chat): its app on :8000 behind PushUp on http://127.0.0.1:7070.
demo: $(VENV)/.installed
	$(BIN)/python -m examples.chat

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy
	$(BIN)/pytest

# The benchmark's quick pass: every scenario at reduced size and time scale.
bench: $(VENV)/.installed-test
	$(BIN)/pushup bench idle
	$(BIN)/pushup bench fanout
	$(BIN)/pushup bench pubrate
	$(BIN)/pushup bench paper-traffic --time-scale 0.05
	$(BIN)/pushup bench paper-scale
	$(BIN)/pushup bench cluster --nodes 1,2,4 --subscribers 500,2000,8000
	$(BIN)/pushup bench capacity --subscribers 20000,40000

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml scripts/install-test-deps.sh
	scripts/install-test-deps.sh
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
