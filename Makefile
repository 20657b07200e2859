# The two set-up commands of the README. Both work on a fresh machine: they make a virtualenv in
# .venv, install Spot Guard into it, and build the sandbox's Kubernetes binaries into a cache
# outside the repo (minutes the first time, nothing when the cache is warm).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: sandbox demo test lint types unit integration bench clean

$(BIN)/spotguard: setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

binaries:
	bash sandbox/build-binaries.sh >/dev/null

demo: $(BIN)/spotguard binaries
	$(BIN)/spotguard demo

sandbox: $(BIN)/spotguard binaries
	$(BIN)/spotguard sandbox

test: $(BIN)/spotguard binaries lint types
	$(BIN)/pytest -p no:cacheprovider -ra

lint: $(BIN)/spotguard
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(BIN)/spotguard
	$(BIN)/mypy

unit: $(BIN)/spotguard
	$(BIN)/pytest -m "not integration"

integration: $(BIN)/spotguard binaries
	$(BIN)/pytest -m integration

bench: $(BIN)/spotguard binaries
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
