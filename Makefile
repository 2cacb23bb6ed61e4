# ICA: the two commands a user needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The policy `make run` applies on first start (later changes are proposed and signed).
POLICY ?= examples/policy.yaml
PYTEST_ARGS ?=

.PHONY: screenshots run test install install-dev pg-binaries node-binaries chromium nginx promtool valgrind lint typecheck pytest openapi settings-reference bench bench-full fuzz clean

# Re-installs only when pyproject.toml changed since the last install (stamp files).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Links ICA prints (enrolment, approvals) point at this server unless ICA_PUBLIC_URL says otherwise.
run: export ICA_PUBLIC_URL ?= http://$(HOST):$(PORT)
run: install
	$(BIN)/ica init --policy $(POLICY)
	$(BIN)/ica serve --host $(HOST) --port $(PORT)

# The test suite starts its own PostgreSQL from the machine's binaries; install them when missing.
pg-binaries:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server binaries"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

# The browser sign-in tests run a real OpenID provider (npm `oidc-provider`) on Node.js.
node-binaries:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
		echo "installing Node.js and npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi

# The console's browser tests drive the machine's Chromium (Playwright only as the driver;
# it never downloads a browser of its own).
chromium:
	@if ! test -x /usr/bin/chromium; then \
		echo "installing Chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# tests/deploy runs Debian's nginx (with deploy/nginx's template) in front of two ICA processes.
# On a machine with an init system the package also starts a system nginx on port 80.
nginx:
	@if ! command -v nginx >/dev/null 2>&1 && ! test -x /usr/sbin/nginx; then \
		echo "installing nginx"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	fi

# The Prometheus rule tests run promtool (Debian's prometheus package ships it; the server it
# also ships is not started by the tests).
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
		echo "installing promtool (Debian package prometheus)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# bench/instructions.py counts the server's instructions per request under valgrind's
# callgrind (Debian's valgrind package; the bench says "not installed" where it is missing).
valgrind:
	@if ! command -v callgrind_control >/dev/null 2>&1; then \
		echo "installing valgrind"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null; \
	fi

pytest: install-dev pg-binaries node-binaries chromium nginx promtool valgrind
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test: lint typecheck pytest

# PNGs of the console's main pages (docs/screenshots/, shown in the README), taken in the
# machine's Chromium from a seeded server with a frozen clock (tests/console/screenshots.py).
screenshots: install-dev pg-binaries chromium
	$(BIN)/python -m pytest -q -n 0 -p no:cacheprovider tests/console/screenshots.py

# The OpenAPI file, and the API reference in docs/api.md generated from it.
openapi: install
	$(BIN)/ica openapi --out api/azdev-ica-openapi.yaml
	$(BIN)/python -m azdev_ica.api.reference api/azdev-ica-openapi.yaml docs/api.md

# docs/operate.md's configuration reference, from the settings code (a test diffs it).
settings-reference: install
	$(BIN)/python -m azdev_ica.settings_reference docs/operate.md

# One table (ICA, its baseline from the same run, ratio, goal) and bench/RESULTS.md.
bench: install-dev pg-binaries valgrind
	$(BIN)/python bench/run_all.py

bench-full: install-dev pg-binaries valgrind
	$(BIN)/python bench/run_all.py --full

# The long schemathesis passes (make test runs one example per operation and caller, and 6
# linked scenarios of 16 steps per walker): 50 examples per operation and caller, and 100
# scenarios of 40 steps following the OpenAPI file's links.
fuzz: install-dev pg-binaries
	ICA_FUZZ_EXAMPLES=50 ICA_FUZZ_SCENARIOS=100 ICA_FUZZ_STEPS=40 $(BIN)/python -m pytest -n 2 tests/api/test_fuzz.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
