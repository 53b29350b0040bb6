# make demo  - set up .venv and run the bundled example
# make test  - set up .venv and run the test suite
# make bench - simulator speed figures
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/iovirt run examples/emulated-e1000.yaml

test: $(VENV)/.installed
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/sim_kernel.py
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/migration.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
