# Phi-3 on AI PCs: the same two commands on Windows, macOS and Linux are `python course.py lab` and
# `python course.py test` (see README.md). These targets are aliases of course.py, for those who type make:
#   make lab    create .venv if missing, install, prepare the model, open JupyterLab on notebooks/
#   make test   create .venv if missing, install, run all tests (pytest + every notebook via nbval)
# Re-running is fast: installs happen again only when requirements change.

PYTHON ?= python3
BIN    := .venv/bin
export OPENVINO_TELEMETRY_OPT_OUT := 1
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lab test test-fast strip reset-notebooks bench clean-cache help

help:
	@echo "make lab | make test | make test-fast | make bench | make strip | make reset-notebooks | make clean-cache"

setup:
	$(PYTHON) course.py setup

lab:
	$(PYTHON) course.py lab $(LAB_ARGS)

test:
	$(PYTHON) course.py test $(PYTEST_ARGS)

# Package tests only (no notebooks).
test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# One output policy for all notebooks: stored without outputs (checked by tests/test_notebooks.py; the git
# filter that course.py installs strips them on `git add` anyway).
strip: setup
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb

# Put the notebooks back to the committed version (your edits and outputs are lost).
reset-notebooks:
	$(PYTHON) course.py reset-notebooks

# Online this measures the real Phi-3 (large downloads and exports); offline, the small model.
bench: setup
	$(BIN)/python -m phi3_helpers bench --output artifacts/bench

# The tests' model cache (tests/conftest.py). The course's own cache is ~/.cache/phi3_helpers.
clean-cache:
	rm -rf .cache/models
