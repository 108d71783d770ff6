# Two commands for a fresh machine:
#   make demo   -- set up ./.venv and run the main job
#   make test   -- set up ./.venv (with test dependencies) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= synthgap-demo

.PHONY: venv test-venv test-system-deps demo test test-fast

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

test-venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# pysolotools (the SOLO peer the tests check our writer against) pins pillow~=9.3 and numpy~=1.23:
	# install it without its pins, with the two packages it imports at load time
	$(BIN)/pip install --quiet --no-deps pysolotools==0.3.17
	$(BIN)/pip install --quiet pandas dataclasses-json
	# tidecv 1.0.1 (the TIDE oracle of tests/metrics/test_tide.py; runs with numpy 2) requires opencv-python,
	# which needs the system's libGL: install it without its requirements, with headless OpenCV and the rest
	$(BIN)/pip install --quiet --no-deps tidecv==1.0.1
	$(BIN)/pip install --quiet opencv-python-headless appdirs seaborn

demo: venv
	$(BIN)/synthgap demo --out $(DEMO_OUT)

# headless Chromium for the HTML report tests (tests/report); installed only when missing and we are root
test-system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium missing and not root: the report page tests will be skipped"

test: test-venv test-system-deps
	$(BIN)/python -m pytest -q

test-fast: test-venv
	$(BIN)/python -m pytest -q -m "not slow"
