# Two commands do everything on a fresh clone with only python3:
#   make reproduce   set up .venv, run the small sweeps, draw every figure
#   make test        set up .venv, run the test suite (CI runs this through .ci/run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-full lint format reproduce bench bench-quick clean

# torch goes first, pinned, so that the range in pyproject.toml finds it satisfied and no
# multi-GB CUDA build is pulled. TORCH_INDEX: the pip index to take that torch from (empty:
# pip's own configuration). Where the default index would serve the CUDA build (Linux), give
# PyTorch's CPU-only wheel index, the address its installation page shows.
TORCH_INDEX ?=
$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,sweep]"
	touch $@

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "not slow" -q

test-full: $(STAMP)
	$(BIN)/python -m pytest -n auto -q

reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python -m rnnexp.bench

bench-quick: $(STAMP)
	$(BIN)/python -m rnnexp.bench --quick
