# Two entry points, each doing all set-up on a fresh machine:
#   make demo   get flower_photos (or use $EMBEDFLOW_DATA), embed, fit logreg + SVM, report, export fused TFLite
#   make test   the test suite (make test-fast: without the tests marked slow)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# make test: pytest-xdist workers, each test file on one worker (--dist loadfile: its module fixtures are
# built once). Not loadgroup: pytest-xdist 3.8 marks a group by rewriting item._nodeid, which pytest 9 no
# longer reads, so every file's tests were spread over both workers and heavy module fixtures built twice.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast install bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

bench: install
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/fit_speed.py

clean:
	rm -rf $(VENV) cache/*.h5 cache/*.lock models
