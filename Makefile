# One command installs everything into .venv and runs the demo (`make demo`) or the tests (`make test`).
# TORCH pins the CPU build that avoids a multi-GB CUDA download here; GPU users: make TORCH="torch>=2.1" ...
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/otreweight demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
