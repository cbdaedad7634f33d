# The two entry points of the README. Each creates .venv on first use and reinstalls when
# pyproject.toml changes; nothing outside the checkout is touched, but `images` (buildah's storage and a
# wheelhouse under ~/.cache/modeldeploy/images; see docs/images.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test crd bench images

quickstart: $(VENV)/.installed
	$(BIN)/modeldeploy run examples/quickstart.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest

crd: $(VENV)/.installed
	$(BIN)/modeldeploy crd > crds/modeldeploy.io_modeldeployments.yaml
	cp crds/modeldeploy.io_modeldeployments.yaml charts/modeldeploy/files/
	PYTHONPATH=tests $(BIN)/python -m cluster.kustomize_base

# The operator and CPU job images, and the vendor job images when CANN_BASE / MAGICMIND_BASE name their bases;
# TORCH_INDEX_URL=pip where PyTorch's CPU index cannot be reached (docs/images.md).
images: $(VENV)/.installed
	PYTHON=$(BIN)/python TORCH_INDEX_URL='$(TORCH_INDEX_URL)' CANN_BASE='$(CANN_BASE)' MAGICMIND_BASE='$(MAGICMIND_BASE)' \
	  images/build.sh

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
