# cvtrain: common tasks. `make help` lists them.
PYTHON ?= python3
# cpu: tensorflow-cpu; gpu: tensorflow[and-cuda]. Never both (same module).
EXTRA ?= cpu
JOB ?= jobs/cifar/basenet.yaml
ARGS ?=
DEMO_DIR ?= .cache/demo
export PIP_ROOT_USER_ACTION := ignore
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install test lint run demo clean

help:
	@echo "make install            install cvtrain[$(EXTRA),test] into $(PYTHON) (EXTRA=gpu for GPUs)"
	@echo "make test               run the test suite"
	@echo "make run JOB=...        install, then train JOB (default $(JOB)); ARGS='--set k=v ...'"
	@echo "make demo               offline: synthesise a small CIFAR-100 archive, train BaseNet 3 epochs"
	@echo "make lint               ruff"

install:
	$(PYTHON) -m pip install -e ".[$(EXTRA),test]"

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check cvtrain tests

run: install
	$(PYTHON) -m cvtrain run $(JOB) $(ARGS)

demo:
	$(PYTHON) -m cvtrain data synth cifar100 $(DEMO_DIR) --classes 25 --train-per-class 200 --test-per-class 40
	$(PYTHON) -m cvtrain run jobs/cifar/basenet.yaml --set data.path=$(DEMO_DIR)/cifar-100-binary.tar.gz \
	    --set training.epochs=3 --out $(DEMO_DIR)/runs --seed 0 $(ARGS)

clean:
	rm -rf .cache/demo .pytest_cache build *.egg-info
