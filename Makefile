# Two commands on a fresh machine (Python 3.11 + pip): `make repro` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
RUN    := PATH="$(BIN):$$PATH"

.PHONY: setup setup-gpu repro test bench

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.lock
	touch $@

setup: $(VENV)/.installed          ## virtual environment with the pinned dependencies

setup-gpu: setup                   ## GPU worker: swap the CPU build of TensorFlow for the CUDA one
	$(BIN)/pip uninstall -y -q tensorflow-cpu
	$(BIN)/pip install -q -c requirements.lock ".[gpu]"

repro: setup                       ## run the whole DVC pipeline on the bundled data
	$(RUN) dvc repro

test: setup                        ## the test suite (CI runs exactly this)
	$(RUN) python -m pytest

bench: setup                       ## speed figures of every stage, printed as a table
	$(RUN) python -m bench
