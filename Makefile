# The two entry points of the README. Each creates .venv on first use and reinstalls when
# pyproject.toml changes; nothing outside the checkout is touched.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test crd bench

quickstart: $(VENV)/.installed
	$(BIN)/modeldeploy run examples/quickstart.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest

crd: $(VENV)/.installed
	$(BIN)/modeldeploy crd > crds/modeldeploy.io_modeldeployments.yaml
	cp crds/modeldeploy.io_modeldeployments.yaml charts/modeldeploy/files/
	PYTHONPATH=tests $(BIN)/python -m cluster.kustomize_base

bench: $(VENV)/.installed
	$(BIN)/python bench/plan_scaling.py
	$(BIN)/python bench/cpu_backends.py
	$(BIN)/python bench/harness_overhead.py
	$(BIN)/python bench/cached_rerun.py
	$(BIN)/python bench/operator_scale.py
	$(BIN)/python bench/security.py
	$(BIN)/python bench/chaos.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,operator,test]'
	touch $@
