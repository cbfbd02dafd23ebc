# Two commands on a fresh clone: `make test` and `make demo`. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test demo bench-serve clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[torch,test]"
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest

demo: $(INSTALLED)
	$(BIN)/optiserve demo

bench-serve: $(INSTALLED)
	$(BIN)/python benchmarks/serve_bench.py

clean:
	rm -rf $(VENV) artifacts build *.egg-info
