# One command installs everything into .venv and runs the demo (`make demo`) or the tests (`make test`).
# TORCH pins the builds that lie on this project's CI disk (torch 2.14.1 + torchvision 0.29.1: torchvision
# cannot run beside the CPU-only 2.13.0 wheel); GPU users: make TORCH="torch torchvision" ...
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1 torchvision==0.29.1
BIN    := $(VENV)/bin

.PHONY: install demo test docs docs-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/otreweight demo

test: install
	$(BIN)/python -m pytest

# The documentation site (docs/_build/html), warnings as errors; the gallery examples run (a few minutes).
docs: install
	$(BIN)/python -m sphinx -b html -W --keep-going -q docs docs/_build/html

# The same build without running the gallery (tests/test_docs.py runs it inside `make test`).
docs-check: install
	OTREWEIGHT_DOCS_GALLERY=0 $(BIN)/python -m sphinx -b html -W --keep-going -q -E docs docs/_build/check

clean:
	rm -rf $(VENV) .pytest_cache docs/_build docs/auto_examples docs/reference/generated
