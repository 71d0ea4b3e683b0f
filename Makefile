# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Pinned again on every pip call so no resolver replaces the CPU wheel with a CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
# checkov pins many packages of its own (boto3, pydantic, ...) at versions the project does not
# use, so it gets a venv of its own and never changes .venv; the tests run it as a program.
IAC_VENV  ?= .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed
CHECKOV   := checkov==3.3.30

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export DS_ACCELERATOR := cpu
export GLOO_SOCKET_IFNAME := lo
export TOKENIZERS_PARALLELISM := false

.PHONY: install iac-tools k8s-config run test image clean

# The image of k8s/ (needs a Docker daemon; not part of `make test`). VARIANT=cuda for GPUs.
IMAGE   ?= registry.example.com/specvid
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
VARIANT ?= cpu
CUDA_BUILD_ARGS := --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128 \
                   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(TORCH) -e '.[serve,test]'
	touch $(STAMP)

iac-tools: $(IAC_STAMP)

$(IAC_STAMP): Makefile
	test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet $(CHECKOV)
	@# checkov must never bring torch along; a policy scanner has no use for it.
	$(IAC_VENV)/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
	touch $(IAC_STAMP)

# Rewrite the serveConfigV2 patches of k8s/overlays/ from serve_config.yaml.
k8s-config: install
	$(PY) -m ops.k8s_config

# The application on embedded defaults: local S3 with sample clips + `serve run serve_config.yaml`.
run: install
	$(PY) -m ops.launch --config serve_config.yaml

test: install iac-tools
	SPECVID_CHECKOV=$(abspath $(IAC_VENV))/bin/checkov $(PY) -m pytest -q

image:
	docker build $(if $(filter cuda,$(VARIANT)),$(CUDA_BUILD_ARGS)) -t $(IMAGE):$(VERSION)-$(VARIANT) .

clean:
	rm -rf $(VENV) $(IAC_VENV) build *.egg-info .pytest_cache
