# Two commands for a fresh machine:
#   make demo   -- set up ./.venv and run the main job
#   make test   -- set up ./.venv (with test dependencies) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= synthgap-demo

.PHONY: venv test-venv demo test test-fast

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

test-venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: venv
	$(BIN)/synthgap demo --out $(DEMO_OUT)

test: test-venv
	$(BIN)/python -m pytest -q

test-fast: test-venv
	$(BIN)/python -m pytest -q -m "not slow"
