# acr-replicator: `make demo` and `make test` on a fresh Debian/Ubuntu machine with Python 3.11+ and Node 20+.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check fmt bench audit clean tools lock

install: $(STAMP) node_modules/.package-lock.json tools

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --silent

# The CNCF distribution registry (the real OCI registry of the tests) and skopeo (the benchmark peer).
tools:
	@scripts/ensure-tool.sh docker-registry registry docker-registry
	@scripts/ensure-tool.sh skopeo skopeo skopeo

demo: install
	$(BIN)/acr-replicator demo

test: install
	$(BIN)/pytest -q

check: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

# The locks: every transitive package, hashed, for the deployment's platform (Python 3.11,
# Linux x86_64), from pyproject.toml's ranges; the dev lock holds the same runtime versions.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --prerelease if-necessary-or-explicit \
	--constraint requirements-prereleases.in --no-strip-extras --custom-compile-command "make lock"
lock: install
	$(LOCK) --upgrade --output-file requirements.txt pyproject.toml
	$(LOCK) --extra dev --constraint requirements.txt --output-file requirements-dev.txt pyproject.toml

audit: install
	$(BIN)/pip-audit --strict -r requirements.txt

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
