PYTHON ?= python3
DATASET ?= mnist
ARGS ?=
RUNS ?= runs
# RUNS/<dataset in lower case>-<mode>, as the job files' "DATASET MODE" lines
RUN_NAME = $(shell echo '$(DATASET)' | tr '[:upper:]' '[:lower:]')

.PHONY: help install install-gpu install-mpi test bench gpu-check fmnist clean train-vanilla train-thermo train-sequential

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## install the package (editable) with the test extra
	$(PYTHON) -m pip install -q -e '.[test]'

install-gpu:  ## install with CuPy and the CUDA 12 libraries it loads (cupy's ctk extra): an NVIDIA driver is all the machine needs
	$(PYTHON) -m pip install -q -e '.[test,gpu]'

install-mpi:  ## install with mpi4py and MPICH from wheels: mpiexec -n R python cli.py train ... (make test then runs the 2-rank tests)
	$(PYTHON) -m pip install -q -e '.[test,mpi]'

test:  ## run the whole test suite (about 2.5 minutes on 2 quiet cores)
	$(PYTHON) -m pytest -q

bench:  ## print benchmark figures as JSON (not a test); targets.py prints the speed targets, floor.py this machine's bound under them
	$(PYTHON) bench/targets.py
	$(PYTHON) bench/floor.py
	$(PYTHON) bench/train_step.py
	$(PYTHON) bench/bases.py
	$(PYTHON) bench/samplers.py
	$(PYTHON) bench/generators.py
	$(PYTHON) bench/priors.py
	$(PYTHON) bench/guards.py

train-vanilla:  ## train without thermodynamic integration (IS for mnist/fmnist): make train-vanilla DATASET=FMNIST [ARGS="--epochs 2"]
	$(PYTHON) cli.py train --dataset $(DATASET) --out $(RUNS)/$(RUN_NAME)-vanilla --resume-existing $(ARGS)

train-thermo:  ## thermodynamic integration: make train-thermo DATASET=FMNIST [ARGS=...]
	$(PYTHON) cli.py train --dataset $(DATASET) --mode thermo --out $(RUNS)/$(RUN_NAME)-thermo --resume-existing $(ARGS)

train-sequential:  ## run a job file one line after the other: make train-sequential CONFIG=jobs.txt
	@test -n "$(CONFIG)" || { echo "error: give the job file: make train-sequential CONFIG=jobs.txt" >&2; exit 2; }
	$(PYTHON) cli.py jobs $(CONFIG) $(ARGS)

gpu-check:  ## on a machine with cupy and a GPU (no network): CPU-vs-GPU parity tests, then the benches on the GPU
	KAEM_TEST_DEVICE=gpu PYTHONPATH=. $(PYTHON) -m pytest -q tests/test_gpu.py
	PYTHONPATH=. $(PYTHON) bench/targets.py --device gpu
	PYTHONPATH=. $(PYTHON) bench/train_step.py --device gpu
	PYTHONPATH=. $(PYTHON) bench/bases.py --device gpu
	PYTHONPATH=. $(PYTHON) bench/samplers.py --device gpu --out runs/bench-gpu
	PYTHONPATH=. $(PYTHON) bench/generators.py --device gpu

fmnist:  ## install Debian's real Fashion-MNIST (needs root and apt)
	apt-get install -y dataset-fashion-mnist

clean:  ## remove caches (never data/ or runs/)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
