# Two commands do everything on a fresh machine (see README.md):
#   make demo   -- set up .venv if needed, then run the main job on the embedded default
#   make test   -- set up .venv if needed, then run the test-suite
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed: setup.cfg setup.py pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)

.PHONY: demo test setup
setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/menpo-densereg demo --out out/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q
