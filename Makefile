# Two commands do all the set-up: `make run` (the main job) and `make test` (the whole suite).
# Both create or reuse the virtualenv in .venv and install the pinned versions of constraints.txt.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-full clean tune-command

install: $(STAMP) tune-command

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Ray installs a `tune` command too, and whichever package was installed last owns .venv/bin/tune:
# after Ray is reinstalled or upgraded, `tune run` answers "No such command 'run'". Put ours back.
tune-command: $(STAMP)
	@grep -q "from search.cli import main" $(BIN)/tune || { \
	  echo "$(BIN)/tune is Ray's command (Ray was installed after this project); restoring ours" \
	       "(python -m search always works)" >&2; \
	  $(BIN)/python -m pip install --quiet --no-deps --force-reinstall -c constraints.txt -e . ; }

run: tune-command
	$(BIN)/tune run quick

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench quick

bench-full: $(STAMP)
	$(BIN)/python -m bench full

# Removes what `make` built; never results: runs/ (every sweep, the MLflow store, the registered
# models) stays, and the line below says so.
clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
	@echo "removed $(VENV), .pytest_cache and test-artifacts; kept runs/ (results, MLflow store, models): delete it yourself if you mean to"
