# Two commands for a fresh machine: `make cookbook` (every notebook, headless) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
# torch==2.13.0 resolves to a local CPU build on our machines; on a GPU box pass e.g. TORCH="torch>=2.4".
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: cookbook test setup paper-figures clean

cookbook: setup
	$(BIN)/python scripts/run_cookbook.py --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	scripts/install_cjk_font.sh
	touch $@

paper-figures: setup
	$(BIN)/python scripts/plot_paper_figures.py

clean:
	rm -rf runs outputs figures/smoke .pytest_cache
