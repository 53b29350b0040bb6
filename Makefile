# make demo  - set up .venv and run the bundled example
# make test  - set up .venv and run the test suite
# make bench - simulator speed figures
# make fuzz  - the long hostile-guest campaign (FUZZ_EXAMPLES per surface, FUZZ_SEED, FUZZ_BUDGET_S each)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

FUZZ_EXAMPLES ?= 100000
FUZZ_SEED ?= 0
FUZZ_BUDGET_S ?= 1800

.PHONY: demo test bench fuzz clean pypy-bytecode

# The PyPy engine's bytecode, compiled ahead (up-to-date files are skipped): a
# `pypy3` subprocess then starts 0.3 s sooner, PYTHONDONTWRITEBYTECODE or not.
pypy-bytecode:
	@if command -v pypy3 >/dev/null; then pypy3 -m compileall -q src/iovirt >/dev/null; fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed pypy-bytecode
	$(BIN)/iovirt run examples/emulated-e1000.yaml

test: $(VENV)/.installed pypy-bytecode
	$(BIN)/pytest

bench: $(VENV)/.installed pypy-bytecode
	$(BIN)/python benchmarks/sim_kernel.py
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/migration.py
	$(BIN)/python benchmarks/port_sharing.py
	$(BIN)/python benchmarks/load64.py

fuzz: $(VENV)/.installed
	$(BIN)/python tests/fuzz_campaign.py --examples $(FUZZ_EXAMPLES) --seed $(FUZZ_SEED) --budget-s $(FUZZ_BUDGET_S)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
