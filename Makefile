# Two commands for a newcomer: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench bench-quick soak qgis-check install install-serve constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Serving needs only the package; the test tools (Playwright, moto, dask, MapProxy...) come with `make test`.
# Every install is pinned by constraints.txt, so a fresh machine gets the versions the tests passed with.
$(VENV)/.installed-serve: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.installed-serve

install-serve: $(VENV)/.installed-serve

install: $(VENV)/.installed-test

# HOST and PORT: `make serve PORT=9000` or `HOST=0.0.0.0 make serve`.
serve: install-serve
	$(BIN)/eotiler serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check server tests benchmarks evalscripts
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

lint: install
	$(BIN)/ruff check server tests benchmarks evalscripts

# eotiler vs TiTiler and MapServer (needs: apt-get install lighttpd cgi-mapserver wrk); writes BENCHMARKS.md.
bench: install
	$(BIN)/python benchmarks/bench.py

# The same scenarios, small and short: the smoke run CI makes (report in benchmarks/results/).
bench-quick: install
	$(BIN)/python benchmarks/bench.py --quick

# 16 clients for 5 minutes over random tiles and GetMaps, 2 workers (report: benchmarks/results/soak.json).
soak: install
	$(BIN)/python benchmarks/soak.py

# By hand: needs Debian's qgis and python3-qgis (apt-get install qgis python3-qgis).
qgis-check: install
	/usr/bin/python3 tests/clients/qgis_check.py --eotiler $(BIN)/eotiler

# Pin what the working venv holds (after a deliberate upgrade there, and a passing `make test`).
constraints: install
	{ grep '^#' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build dist *.egg-info
