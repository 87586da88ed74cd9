# Two commands a newcomer needs: `make demo` and `make test` (both set up .venv first);
# `make test-fast` is the quick loop while editing (everything but tests marked slow).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

# constraints.txt pins the CPU torch build that lies on disk here (see its comments)
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

demo: install
	$(BIN)/rsgeo demo -o demo --overwrite

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/raster_pipeline.py

clean:
	rm -rf $(VENV) demo .pytest_cache
