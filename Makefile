# One command to run DUST, one to test it. Everything is installed into .venv from PyPI.
VENV   ?= .venv
BIN    := $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: run test lint docs bench bench-serve bench-ui crash fuzz install services browsers cluster clean

run: install  ## set up and serve DUST on SQLite with the healthcare demo data loaded
	$(BIN)/dust demo healthcare --serve

test: install services browsers cluster lint  ## set up and run the whole test suite, on SQLite and PostgreSQL
	@# The project's own modules compiled once, for the same reason as the installed ones (see install): the
	@# suite starts hundreds of processes (dust serve, the CLI, the docs' examples), each importing all of dust.
	$(BIN)/python -m compileall -qq -j 0 dust tests examples bench
	DUST_TEST_REQUIRE_POSTGRES=1 DUST_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/pytest -n 2 --dist loadfile --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy dust

docs: install  ## the documentation site into site/ (MkDocs Material, warnings as errors); `mkdocs serve` to browse it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install  ## the benchmarks in bench/ (minutes; prints tables)
	$(BIN)/python bench/ingest_aggregate.py

bench-serve: install services  ## one `dust serve` under wrk on SQLite and PostgreSQL: req/s, p50/p99 per route, HTTP ingest
	@command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python bench/serve.py --postgres-url $(PG_URL)

crash: install services  ## SIGKILL `dust serve` mid-write and check every acknowledged write, 100 rounds per backend
	$(BIN)/python -m tests.reliability.crash --rounds 100 --backend sqlite
	$(BIN)/python -m tests.reliability.crash --rounds 100 --backend postgresql --postgres-url $(PG_URL)

fuzz: install services  ## fuzz every API operation from /openapi.json, 1,000 examples per operation and role, both backends
	DUST_FUZZ_EXAMPLES=1000 DUST_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/pytest tests/api/test_fuzz.py -n 2 -q

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# pip byte-compiles the installed files one after another (torch's thousands: over half of the install);
	@# compileall does it on every core. Compiled they must be: where PYTHONDONTWRITEBYTECODE is set (as on CI),
	@# Python would otherwise compile torch & co. again in every process. Some packages ship files for newer
	@# Pythons that do not compile (pip skips them too), hence -qq and || true.
	$(BIN)/pip install --quiet --no-compile -e '.[test,bench,models,docs,images]'
	$(BIN)/python -m compileall -qq -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	touch $@

browsers:  ## Debian's chromium for the UI's browser tests (tests/ui/test_browser.py), installed when missing
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

cluster:  ## Debian's nginx, the balancer of deploy/local-cluster (tests/deploy), installed when missing
	@command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)

bench-ui: install  ## first render of each UI page in chromium, over the healthcare demo at --size 10000
	$(BIN)/python bench/ui.py --size 10000

services:  ## start the local PostgreSQL and Redis if they are not answering (the machines here run them already)
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@pg_isready -h 127.0.0.1 -p 5432
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
		--save "" --appendonly no --dir /tmp --logfile /tmp/dust-redis.log
	@redis-cli -h 127.0.0.1 -p 6379 ping

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
