# The two commands of the README. Everything installs from this repository's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DAY := fixtures/day100k
DAY_ARGS := --originations $(DAY)/originations.parquet --funders $(DAY)/funders.yaml \
            --portfolio $(DAY)/portfolio.csv --exposures $(DAY)/exposures.csv

.PHONY: setup demo test test-slow bench

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# the day-end plan on the shipped 100k-loan fixture, then the independent check of it
demo: setup
	$(BIN)/fundalloc plan $(DAY_ARGS) --out out/day100k
	$(BIN)/fundalloc verify $(DAY_ARGS) --plan out/day100k

# the suite runs the store against SQLite and against a local PostgreSQL server, which
# scripts/postgres-up installs (apt-get) and starts when it is not running yet
test: setup
	FUNDALLOC_TEST_POSTGRES_URL=$$(scripts/postgres-up | tail -n 1) $(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/whatif.py
	$(BIN)/python benchmarks/month.py
