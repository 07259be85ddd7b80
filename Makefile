PYTHON ?= python3
DATASET ?= mnist
ARGS ?=
RUNS ?= runs
# RUNS/<dataset in lower case>-<mode>, as the job files' "DATASET MODE" lines
RUN_NAME = $(shell echo '$(DATASET)' | tr '[:upper:]' '[:lower:]')

.PHONY: help install install-gpu test bench fmnist clean train-vanilla train-thermo train-sequential

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## install the package (editable) with the test extra
	$(PYTHON) -m pip install -q -e '.[test]'

install-gpu:  ## install with the CuPy (CUDA 12) extra as well
	$(PYTHON) -m pip install -q -e '.[test,gpu]'

test:  ## run the whole test suite (about 5 minutes on 2 cores)
	$(PYTHON) -m pytest -q

bench:  ## print benchmark figures as JSON (not a test)
	$(PYTHON) bench/train_step.py
	$(PYTHON) bench/bases.py
	$(PYTHON) bench/samplers.py
	$(PYTHON) bench/generators.py
	$(PYTHON) bench/priors.py

train-vanilla:  ## train without thermodynamic integration (IS for mnist/fmnist): make train-vanilla DATASET=FMNIST [ARGS="--epochs 2"]
	$(PYTHON) cli.py train --dataset $(DATASET) --out $(RUNS)/$(RUN_NAME)-vanilla --resume-existing $(ARGS)

train-thermo:  ## thermodynamic integration: make train-thermo DATASET=FMNIST [ARGS=...]
	$(PYTHON) cli.py train --dataset $(DATASET) --mode thermo --out $(RUNS)/$(RUN_NAME)-thermo --resume-existing $(ARGS)

train-sequential:  ## run a job file one line after the other: make train-sequential CONFIG=jobs.txt
	@test -n "$(CONFIG)" || { echo "error: give the job file: make train-sequential CONFIG=jobs.txt" >&2; exit 2; }
	$(PYTHON) cli.py jobs $(CONFIG) $(ARGS)

fmnist:  ## install Debian's real Fashion-MNIST (needs root and apt)
	apt-get install -y dataset-fashion-mnist

clean:  ## remove caches (never data/ or runs/)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
