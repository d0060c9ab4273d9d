# Every target creates and uses the local virtual environment .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint bench clean clean-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/chainsight demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict ledger query api sample_data chainsight

check: lint test

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean: clean-cache
	rm -rf $(VENV) demo-ledger .pytest_cache .mypy_cache .ruff_cache

# numba's cached machine code (see ledger/compiled.py)
clean-cache:
	find ledger -name '*.nbi' -delete -o -name '*.nbc' -delete
