PYTHON ?= python3

.PHONY: help install install-gpu test bench fmnist clean

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

fmnist:  ## install Debian's real Fashion-MNIST (needs root and apt)
	apt-get install -y dataset-fashion-mnist

clean:  ## remove caches (never data/ or runs/)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
