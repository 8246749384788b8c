# The README's commands. Each creates .venv when missing and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
# Where there is no GPU, a CPU build of torch (2.13.0 installs from local disk on our machines; elsewhere pass
# TORCH_PIP_ARGS="--index-url <PyTorch's CPU wheel index>" so that pip does not pull a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?= -n 2
# `make test-random`: the fast tests in one process, in a random order (pytest-random-order prints the seed;
# --random-order-seed=N replays an order). Catches tests that pass only in the order they were written.
FAST_TESTS ?= tests/test_architecture.py tests/test_blocks.py tests/test_describe.py tests/test_layout.py \
	tests/test_model.py tests/test_train.py tests/test_run_safety.py tests/sweeps tests/tasks \
	tests/kernels/test_scan_interface.py tests/kernels/test_reference_scan.py

.PHONY: demo test test-random bench install clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q "$(TORCH_CPU)" $(TORCH_PIP_ARGS); fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m hybrid.train experiment=demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-random: $(VENV)/.installed
	$(PY) -m pytest -p no:xdist --random-order $(FAST_TESTS)

bench: $(VENV)/.installed
	$(PY) -m hybrid.bench scan --device cpu

clean:
	rm -rf $(VENV) runs .pytest_cache
