# Two commands for a fresh machine with Python >= 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ROOT   ?= ./data

.PHONY: run web test lint pictures clean

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

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest

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
