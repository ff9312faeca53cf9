# Two commands on a fresh machine (Python 3.11 + pip): `make repro` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
RUN    := PATH="$(BIN):$$PATH"

.PHONY: help setup setup-gpu setup-serve repro test test-fast lint bench serve demo chromium
.DEFAULT_GOAL := help

help:                              ## this list (plain `make`)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The project itself goes in editable (its one package, digits/, stays here; the commands digits-recognize and
# digits-serve land in .venv/bin), built with the pinned setuptools, not a downloaded one.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed          ## virtual environment with the pinned dependencies and the project's commands

setup-gpu: setup                   ## GPU worker: swap the CPU build of TensorFlow for the CUDA one
	$(BIN)/pip uninstall -y -q tensorflow-cpu
	$(BIN)/pip install -q --no-build-isolation -c requirements.lock -e ".[gpu]"

# The server alone, without TensorFlow, in its own environment: it answers with the exported models
# (`dvc repro export`; --runtime onnx or litert) of the directory it is started in.
.venv-serve/.installed: requirements-serve.lock pyproject.toml
	$(PYTHON) -m venv .venv-serve
	.venv-serve/bin/pip install --disable-pip-version-check -q -r requirements-serve.lock "$$(grep '^setuptools==' requirements.lock)"
	.venv-serve/bin/pip install --disable-pip-version-check -q --no-deps --no-build-isolation .
	touch $@

setup-serve: .venv-serve/.installed  ## .venv-serve: the HTTP service and drawing page without TensorFlow (digits-serve)

repro: setup                       ## run the whole DVC pipeline on MNIST (the pinned wheel)
	$(RUN) dvc repro

chromium:                          ## Debian's Chromium for the browser test (no browser downloads elsewhere)
	@if [ -z "$$CHROMIUM" ] && [ ! -x /usr/bin/chromium ]; then \
	    echo "installing Chromium for tests/test_browser.py (apt-get install chromium)"; \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; \
	fi

test: setup chromium               ## the test suite (CI runs exactly this, after make lint)
	$(RUN) python -m pytest

test-fast: setup                   ## the unit tests: the suite less the `integration` mark
	$(RUN) python -m pytest -m "not integration"

lint: setup                        ## ruff on the whole repository (rules in pyproject.toml)
	$(RUN) ruff check .

bench: setup                       ## speed figures of every stage, printed as a table
	$(RUN) python -m bench

demo: setup                        ## the loop on MNIST: a first run and three nights (flows/loop_demo.py)
	$(RUN) python -m flows.loop_demo $(ARGS)

serve: setup                       ## HTTP API + drawing page on http://127.0.0.1:8000/; ARGS="--host 0.0.0.0 --port 8080"
	$(RUN) python -m digits.server $(ARGS)
