# Quickstart: `make demo` and `make test` (each sets up .venv on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: demo ui data-pin test test-all browser bench bench-reference science lint format repro clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs are stamped: re-run only when pyproject.toml or constraints.txt change.
$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[service]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed-run

# The main job on the embedded default data: regenerate data/ if missing (pinned by data.dvc),
# then the Prefect pipeline (ingest, train, evaluate + register, explain, report) with embedded
# defaults: Prefect's temporary local API, MLflow in mlruns/ (see `make ui`).
demo: $(VENV)/.installed-run
	@if [ ! -f data/metadata.csv ]; then \
	  echo "data/ is missing: regenerating it with phenexplain synth (params.yaml: synth)"; \
	  $(BIN)/phenexplain synth data && $(MAKE) --no-print-directory data-pin; \
	fi
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 $(BIN)/python -m flows.demo

# The MLflow UI on the local store (mlruns/mlflow.db; artifacts in mlruns/artifacts).
ui: $(VENV)/.installed-run
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

# Record regenerated data/ in the DVC cache and check it against the pin in data.dvc.
data-pin: $(VENV)/.installed-run
	@$(BIN)/dvc commit -q -f data.dvc
	@if git diff --quiet -- data.dvc; then \
	  $(BIN)/dvc status data.dvc; \
	else \
	  git checkout -q -- data.dvc; \
	  echo "WARNING: data/ regenerated from params.yaml differs from the pinned data.dvc" \
	       "(were params.yaml's synth section or the generator changed? The pin holds where numpy" \
	       "runs AVX-512 kernels; this machine's level: $$($(BIN)/python -c 'from phenexplain.data.synthetic.plate import simd_level; print(simd_level())')," \
	       "see tests/data/test_dvc_pin.py). Pin it with 'dvc add data'."; \
	fi

test: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest

# Headless Debian chromium for the explorer-page test (Playwright drives it; no browser download).
# Installed with apt when missing and permitted; otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the explorer test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null) || echo "WARNING: chromium not installed"; \
	  else echo "WARNING: chromium missing and apt-get not usable: the explorer test will skip"; fi; }

test-all: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest -m "not gpu"

bench: $(VENV)/.installed-run
	@mkdir -p bench
	$(BIN)/phenexplain bench synth | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench ingest | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench train | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench generate | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench explain | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench translate | tee -a bench/results.jsonl
	$(BIN)/phenexplain bench measure | tee -a bench/results.jsonl

# Ours beside the reference in the same run (SG2ADA_DIR: a work tree of NVlabs/stylegan2-ada-pytorch).
bench-reference: $(VENV)/.installed-run
	$(BIN)/python bench/vs_reference.py --repeats 3

# The science benchmark: every planted assay x 3 training seeds, the recipe (cpu-small at the
# demo's 60 kimg) beside the old profile at its old budget (cpu-small-v1, 20 kimg), on the same
# plates of about 2,100 crops per condition (about 3.5 hours on 2 cores; resumes where
# it stopped). Results in bench/science/summary.md and summary.png.
science: $(VENV)/.installed-run
	$(BIN)/phenexplain bench science bench/science --profile cpu-small,cpu-small-v1@20

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy phenexplain flows

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

repro: $(VENV)/.installed-run
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

clean-venv:
	rm -rf $(VENV)
