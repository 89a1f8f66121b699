# KuaiRec SASRec study. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PROFILE ?= full
VENV ?= .venv
PY := $(VENV)/bin/python
# wall time and peak memory of each notebook run (reports/<profile>/resources/*.json, the report's cost table)
MEASURE = $(VENV)/bin/python -m sasrec report measure
PAPERMILL := $(VENV)/bin/papermill
JUPYTER := $(VENV)/bin/jupyter
ARCHIVE ?=

ifeq ($(PROFILE),full)
OUT := reports
else
OUT := reports/$(PROFILE)
endif
EXEC := $(OUT)/executed
HTML := $(OUT)/html
NOTEBOOKS := 01_eda 02_prepare_data 03_train 04_evaluate 05_cross_dataset 06_experiments 07_features 08_tuning 09_two_stage
EXECUTED := $(NOTEBOOKS:%=$(EXEC)/%.ipynb)
PKG_SRC := $(shell find sasrec -name "*.py" -o -name "*.j2") pyproject.toml
DATA_STAMP := data/.stamps/$(PROFILE).data

export SASREC_PROGRESS ?= 0
export PYTHONHASHSEED := 0

.PHONY: help setup lab data simulate report test test-unit test-notebooks train-ddp paper bench lint format clean FORCE

help: ## Show this list of targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: PROFILE=full|smoke|real (report profile), WAIT=false (refuse when the profile is being written),"
	@echo "             CHECK_RESOURCES=false (skip the up-front memory and disk check of make report),"
	@echo "             ARCHIVE=PATH (make data from a downloaded zip), NPROC/DDP_ARGS (train-ddp), LAB_ARGS (lab)"

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	$(VENV)/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sasrec)" >/dev/null
	touch $@

setup: $(VENV)/.installed ## Create .venv (venv + pip) and install the package with pinned dependencies

LAB_ARGS ?=
lab: setup ## Open JupyterLab on notebooks/ (LAB_ARGS="--port 8899 --no-browser" passes flags; --allow-root as root)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

data: setup ## Download the official KuaiRec 2.0 archive into data/raw (resume, unzip, validate)
	$(PY) -m sasrec download $(if $(ARCHIVE),--archive "$(ARCHIVE)",)

simulate: setup ## Write the KuaiRec-shaped simulator's files into data/simulated (default scale)
	$(PY) -m sasrec simulate --out data/simulated

$(DATA_STAMP): setup FORCE
	@$(PY) -m sasrec report data --profile $(PROFILE) --stamp $@

# papermill writes $@.partial.ipynb, renamed to $@ only once the notebook ran to the end: a run killed
# meanwhile leaves no executed notebook, and the next run redoes it. An executed notebook without its HTML
# (killed during nbconvert) is removed by `report verify` at the start of the next `make report`.
$(EXEC)/%.ipynb: notebooks/%.ipynb params/$(PROFILE)/%.yaml $(PKG_SRC) $(DATA_STAMP)
	@mkdir -p $(EXEC) $(HTML)
	@echo "== $* ($(PROFILE))"
	$(MEASURE) --out $(OUT)/resources/$*.json -- \
		$(PAPERMILL) $< $@.partial.ipynb -f params/$(PROFILE)/$*.yaml -k python3 --cwd notebooks --no-progress-bar \
		--log-level WARNING
	@mv $@.partial.ipynb $@
	$(JUPYTER) nbconvert --to html --log-level WARN $@ --output-dir $(HTML)

$(EXEC)/03_train.ipynb: $(EXEC)/02_prepare_data.ipynb
$(EXEC)/04_evaluate.ipynb: $(EXEC)/03_train.ipynb
$(EXEC)/05_cross_dataset.ipynb: $(EXEC)/02_prepare_data.ipynb
$(EXEC)/06_experiments.ipynb: $(EXEC)/02_prepare_data.ipynb
$(EXEC)/07_features.ipynb: $(EXEC)/02_prepare_data.ipynb
$(EXEC)/08_tuning.ipynb: $(EXEC)/03_train.ipynb
$(EXEC)/09_two_stage.ipynb: $(EXEC)/03_train.ipynb $(EXEC)/05_cross_dataset.ipynb

$(OUT)/README.md: $(EXECUTED)
	$(PY) -m sasrec report summary --reports-dir $(OUT) --profile $(PROFILE)

# `report` holds the profile's lock for the whole run (a second `make report` of the profile waits, or with
# WAIT=false exits 2 naming the holder), removes executed notebooks whose metrics JSON is missing or damaged
# (`report verify`), then runs `report-inner`: only changed or removed notebooks rerun.
WAIT ?= true
CHECK_RESOURCES ?= true
.PHONY: report-inner
report: setup ## Run notebooks 01-09 headlessly (PROFILE=full|smoke, WAIT=false) and regenerate the report
	+@$(PY) -m sasrec report run --profile $(PROFILE) $(if $(filter false no 0,$(WAIT)),--no-wait) \
		$(if $(filter false no 0,$(CHECK_RESOURCES)),--no-resource-check) --make "$(MAKE)"

report-inner: $(OUT)/README.md
	@echo "report written to $(OUT)/README.md"

test: setup lint ## Lint, then the unit tests and the nbval notebook tests (smoke parameters)
	$(PY) -m pytest -q tests

test-unit: setup ## Only the unit tests (pytest -m unit)
	$(PY) -m pytest -q -m unit tests

test-notebooks: setup ## Only the nbval notebook tests on smoke parameters (pytest -m notebooks)
	$(PY) -m pytest -q -m notebooks tests

NPROC ?= 2
DDP_PROFILE ?=
DDP_NOTEBOOK ?= 05_cross_dataset
DDP_MODEL ?= sasrec_bce
ifeq ($(DDP_PROFILE),)
DDP_ARGS ?= --dataset=small_matrix --train_dir=ddp --device=cpu --num_epochs=5
else
DDP_CONFIG := models/ddp/$(DDP_PROFILE).$(DDP_NOTEBOOK).$(DDP_MODEL).yaml
DDP_ARGS ?= --train_dir=ddp_$(DDP_PROFILE)_$(DDP_MODEL)
endif
train-ddp: setup ## Data-parallel training with torchrun (NPROC processes; DDP_ARGS are train's flags; DDP_PROFILE=real trains a profile's model)
ifneq ($(DDP_PROFILE),)
	$(PY) -m sasrec report train-config --profile $(DDP_PROFILE) --notebook $(DDP_NOTEBOOK) --model $(DDP_MODEL) \
		--out $(DDP_CONFIG)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m sasrec train --config=$(DDP_CONFIG) $(DDP_ARGS)
else
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m sasrec train $(DDP_ARGS)
endif

SASREC_TXT ?= data/sasrec/ml-1m.txt
paper: setup ## SASRec paper's protocol on a SASRec-format file (SASREC_TXT=path/ml-1m.txt): leave-one-out, 100 sampled negatives
	$(PY) -m sasrec train --dataset=$(SASREC_TXT) --train_dir=paper --split=leave_one_out --eval_protocol=sampled \
		--num_eval_negatives=100 --maxlen=200 --dropout_rate=0.2 --hidden_units=50 --num_blocks=2 --num_heads=1 \
		--lr=0.001 --batch_size=128 --num_epochs=200 --eval_every=20 --patience=60 \
		--metrics_json=reports/metrics/paper_protocol_$(notdir $(basename $(SASREC_TXT))).json

bench: setup ## Run the performance benchmarks (minutes; figures printed and saved to reports/bench.json)
	$(PY) benchmarks/run_all.py

lint: setup ## ruff check and format --check (package, tests, benchmarks, notebooks); notebooks stripped and in sync
	$(VENV)/bin/ruff check sasrec tests benchmarks notebooks
	$(VENV)/bin/ruff format --check sasrec tests benchmarks notebooks
	$(VENV)/bin/nbstripout --keep-id --verify notebooks/*.ipynb
	$(PY) -m sasrec report params --check

format: setup ## Sync notebooks' parameters cells from params/full, apply ruff, strip notebook outputs
	$(PY) -m sasrec report params
	$(VENV)/bin/ruff format sasrec tests benchmarks notebooks
	$(VENV)/bin/ruff check --fix sasrec tests benchmarks notebooks
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

clean: ## Remove executed notebooks, HTML, smoke reports, caches (keeps data/raw and committed results)
	rm -rf reports/executed reports/html reports/smoke reports/scratch data/processed data/.stamps .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
