# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the whole suite). Both create the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean browser constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Newer releases, tried: a scratch venv takes the newest that pyproject.toml admits and writes
# them to constraints.txt; then `make test` (which reinstalls under them) says if they pass.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; .venv-constraints/bin/pip freeze --exclude-editable; } \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-constraints

demo: $(STAMP)
	$(BIN)/liuhen demo

# Two test processes, a file to each at a time: most tests wait on servers, subprocesses and
# the disk, not on a core (2,173 tests, one 2-core machine: 10:15 to 13:40 with -n 2 on a fresh clone;
# 2,112 tests took 24:50 serial).
test: $(STAMP) browser lint
	$(BIN)/pytest -n 2 --dist loadfile

# The browser tests drive Debian's chromium through Playwright's Python package
# (`playwright install` downloads a browser of its own, which cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium fonts-noto-cjk; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) browser
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/log.py
	$(BIN)/python bench/transcode.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/sequencer.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/derivatives.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/web.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
