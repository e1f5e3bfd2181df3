# Every target creates .venv on a fresh clone; nothing outside the project's files is assumed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# pytest worker processes: most process-level tests wait on a daemon, so more workers than
# cores keep both cores busy; worksteal evens out the long ones at the end.
PYTEST_WORKERS ?= 6

.PHONY: demo test lint typecheck pytest hadolint emulator bench image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(STAMP_TEST): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/backup-monitor demo

emulator: $(STAMP_RUN)
	$(BIN)/backup-monitor emulator --port 8443

lint: $(STAMP_TEST)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP_TEST)
	$(BIN)/mypy monitor tests bench

# Where PYTHONDONTWRITEBYTECODE is set (this machine sets it), every test worker and every
# daemon a test starts would compile our sources and pytest's rewritten test modules anew: about
# 9 s of CPU per worker. Compiled once here instead, then read by all.
pytest: $(STAMP_TEST)
	$(BIN)/python -m compileall -q -j 0 monitor bench
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -p no:cacheprovider --collect-only > /dev/null || true
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal

hadolint: $(STAMP_TEST)
	$(BIN)/hadolint Dockerfile

test: lint typecheck pytest hadolint

# For those with a container engine; CI checks the image's contract without one
# (hadolint, and tests/test_container.py runs the wheel as the Dockerfile says).
IMAGE ?= backup-job-monitor:0.1.0
image:
	docker build -t $(IMAGE) .

bench: $(STAMP_TEST)
	$(BIN)/python bench/emulator_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
