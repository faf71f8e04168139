# Two commands do all the set-up: `make run` (the main job) and `make test` (the whole suite).
# Both create or reuse the virtualenv in .venv and install the pinned versions of constraints.txt.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# On Linux without an NVIDIA driver, PyTorch's CPU-only wheel index (a few hundred MB instead of several GB of
# CUDA wheels), when it answers; elsewhere, or where only the default package index is reachable, the default.
# Probed once, on first use by an install recipe (not on every `make`).
TORCH_INDEX ?= $(eval TORCH_INDEX := $(shell [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 && \
  curl -fsS --max-time 5 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null && \
  echo https://download.pytorch.org/whl/cpu))$(TORCH_INDEX)
PIP_INSTALL = $(BIN)/python -m pip install --quiet -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

.PHONY: install run test lint bench bench-full bench-gpu clean tune-command

install: $(STAMP) tune-command

# `make run` and `make install`: what the tool needs (and boto3, for `ray up` on AWS); `make test` adds the test tools.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); this project needs" \
	       "3.10 or later (tested on 3.11): make PYTHON=python3.11 …" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),@echo "no NVIDIA GPU: PyTorch's CPU-only build from $(TORCH_INDEX)")
	$(PIP_INSTALL) -e '.[aws]'
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[aws,dev]'
	touch $@

# Ray installs a `tune` command too, and whichever package was installed last owns .venv/bin/tune:
# after Ray is reinstalled or upgraded, `tune run` answers "No such command 'run'". Put ours back.
tune-command: $(STAMP)
	@grep -q "from search.cli import main" $(BIN)/tune || { \
	  echo "$(BIN)/tune is Ray's command (Ray was installed after this project); restoring ours" \
	       "(python -m search always works)" >&2; \
	  $(PIP_INSTALL) --no-deps --force-reinstall -e . ; }

run: tune-command
	$(BIN)/tune run quick

test: $(DEV_STAMP) tune-command
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench quick

bench-full: $(STAMP)
	$(BIN)/python -m bench full

# On a machine with CUDA: 4 trials sharing one GPU, GPU vs CPU epochs, a GPU checkpoint on the CPU.
bench-gpu: $(STAMP)
	$(BIN)/python -m bench.gpu

# Removes what `make` built; never results: runs/ (every sweep, the MLflow store, the registered
# models) stays, and the line below says so.
clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
	@echo "removed $(VENV), .pytest_cache and test-artifacts; kept runs/ (results, MLflow store, models): delete it yourself if you mean to"
