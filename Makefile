# Two commands matter: `make demo` runs the main job, `make test` runs every test.
# Both install what they need: Debian packages (once), a .venv with the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps venv test unit integration lint demo bench schema clean
all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,agent,operator]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv
	$(BIN)/pytest tests/integration -q

# The README's test command: lint, types and every test tier.
test: lint
	$(BIN)/pytest tests -q

demo: venv
	$(BIN)/python examples/demo.py

bench: venv
	$(BIN)/python benchmarks/bench_hash.py
	$(BIN)/python benchmarks/bench_certify.py

schema: venv
	$(BIN)/python tools/export_schema.py

clean:
	rm -rf demo-output bench-output .pytest_cache .mypy_cache .ruff_cache
