# rbtc-indexer — every set-up step lives here, so a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ANVIL := .tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

.PHONY: all install tools contracts test demo bench lint postgres browser loadgen clean

all: test

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

$(ANVIL): .tools/package.json .tools/package-lock.json
	cd .tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: $(ANVIL)

contracts: install tools
	$(PY) tests/contracts/build.py

# Start the local PostgreSQL cluster if nothing answers on 127.0.0.1:5432. The parallel suite and the bench
# hold well over a hundred connections at times (a daemon holds 16), so the local cluster (as root) is given
# PG_MAX_CONNECTIONS if it allows fewer; that takes one restart, once.
PG_MAX_CONNECTIONS ?= 300
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1
	@local=postgresql://postgres@127.0.0.1:5432/postgres; \
	current=$$(psql "$$local" -Atc 'SHOW max_connections'); \
	if [ "$$current" -lt $(PG_MAX_CONNECTIONS) ] && [ "$$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then \
	  echo "raising the local cluster's max_connections from $$current to $(PG_MAX_CONNECTIONS) (one restart)"; \
	  psql "$$local" -qc "ALTER SYSTEM SET max_connections = $(PG_MAX_CONNECTIONS)" && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main restart && \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	fi

# Headless Chromium for the status page test (Debian's package).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The HTTP load generator of the API benchmark (Debian's package).
loadgen:
	@command -v hey >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; }

# Two workers (this machine's cores; the tests mostly wait on nodes and the database), then the tests
# marked `serial`, which restart the shared PostgreSQL server, alone. Both parts run; either failing fails.
TEST_WORKERS ?= 2
test: install tools postgres browser
	@status=0; \
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) -m "not serial" || status=$$?; \
	$(VENV)/bin/pytest -q -m serial || status=$$?; \
	exit $$status

demo: install tools postgres
	$(PY) scripts/demo.py

bench: install tools postgres loadgen
	$(PY) -m bench.run

# Style, types (strict on indexer/ and projections/) and the import layers of the pipeline.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .tools/node_modules .pytest_cache .ruff_cache
