# Two commands for a fresh machine with Python >= 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ROOT   ?= ./data

.PHONY: run web test check soak lint pictures clean

# Both targets install the working tree in editable mode into one venv, so they
# never disagree about which code runs; the stamps re-install when
# pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed $(if $(WEB),$(VENV)/.web-installed)
	$(if $(WEB),$(BIN)/bgremover web --root $(ROOT) & trap 'kill $$!' EXIT;) $(BIN)/bgremover run --root $(ROOT)

# The web page beside the daemon, in its own process: `make web` in a second terminal
# (or `make run WEB=1` for both in one).
$(VENV)/.web-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[web]'
	touch $@

web: $(VENV)/.web-installed
	$(BIN)/bgremover web --root $(ROOT)

# Everything CI runs. The tiers, each a folder of tests/: unit (in the test process), commands
# (a bgremover command or job process), daemon (a real daemon, fake jobs), model (a real daemon
# and the real model), bench, web, cluster, packaging and soak.
#
# Most tests wait on processes (a daemon's idle close, a job's sleep, a broker), so TEST_WORKERS pytest
# processes share the cores, each running whole files (a file's module fixtures are built once);
# tests/conftest.py hands out the longest tiers first. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 4
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The inner loop: lint, then the tests that start no process (tests/unit), in about 3 minutes.
check: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests/unit

# The long runs, by hand or nightly: the crash soak at its full size and the queue's property
# test drawing many more sequences.
soak: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q tests/soak tests/unit/test_queue_properties.py --hypothesis-profile=thorough \
		--soak-images 1000 --soak-kills 50

# The linter and the formatter, as CI runs them (`ruff format .` rewrites what --check refuses).
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The pictures of docs/outputs.md and docs/models.md, drawn by the real pipeline from shipped photos
# (the Models picture once ./data/models holds isnet-small: bgremover models fetch isnet-small --root data).
pictures: $(VENV)/.installed
	$(BIN)/python docs/make_pictures.py

clean:
	rm -rf $(VENV) data build dist *.egg-info .pytest_cache
