# Two commands: `make run` serves an instance, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run cluster test lint format bench bench-scale bench-page clean

# `make run` installs the app alone; the test tools (the dev extra, and axe-core from npm for the
# accessibility audit) come with `make test`.
$(BIN)/.app: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed: $(BIN)/.app tests/package-lock.json
	$(BIN)/pip install --quiet -e ".[dev]"
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(BIN)/.app
	$(BIN)/python manage.py migrate --noinput
	@echo "Webhook Inspector: open $${PUBLIC_URL:-http://$(HOST):$(PORT)/} (Ctrl-C stops it)"
	exec $(BIN)/daphne --bind $(HOST) --port $(PORT) --server-name '' --verbosity 0 inspector.asgi:application

# N processes on PostgreSQL + Redis behind nginx, on this machine (scripts/cluster; N=2 by default).
cluster: $(BIN)/.installed
	exec $(BIN)/python scripts/cluster

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	./scripts/test-all

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmarks (bench/README.md): both modes, then memory under big and slow clients; both
# run even if the first fails, and the target fails if either did.
bench: $(BIN)/.installed
	$(BIN)/python bench/run.py; status=$$?; $(BIN)/python bench/memory.py || status=1; exit $$status

# N app processes on PostgreSQL + Redis for each N of BENCH_PROCESSES, then the fan-out to 100
# listeners (e.g. BENCH_PROCESSES=1,2,4,8 make bench-scale on a machine with 8+ cores).
BENCH_PROCESSES ?= 1,2,4
bench-scale: $(BIN)/.installed
	$(BIN)/python bench/run.py --processes $(BENCH_PROCESSES) --fanout

# The inspector page in Chromium: a bin of 500 captures receiving 100/s, traced (bench/page.py).
bench-page: $(BIN)/.installed
	$(BIN)/python bench/page.py

clean:
	rm -rf $(VENV) tests/node_modules data/test-*.sqlite3*
