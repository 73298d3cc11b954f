# cairn — the two set-up commands of the README, and a few more.
#   make run    start the local 3-member cluster (configs/local-3node.yaml) in the foreground
#   make test   run every test
# Both create the virtual environment in .venv first if it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/local-3node.yaml

.PHONY: run test test-long bench tox clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,patroni,etcd-clients]' tox
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cairn cluster --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The long runs: many more Raft schedules (see tests/raft/test_simulation.py),
# and many more fuzzing seeds against a live cluster and the apply path
# (tests/integration/test_fuzz.py, tests/store/test_apply_edges.py).
CAIRN_FUZZ_SEEDS   ?= 10
CAIRN_FUZZ_SECONDS ?= 60
test-long: $(STAMP)
	CAIRN_SIM_SCHEDULES=100000 $(BIN)/python -m pytest -q tests/raft -k simulation
	CAIRN_FUZZ_SEEDS=$(CAIRN_FUZZ_SEEDS) CAIRN_FUZZ_SECONDS=$(CAIRN_FUZZ_SECONDS) \
		$(BIN)/python -m pytest -q tests/integration/test_fuzz.py tests/store/test_apply_edges.py

tox: $(STAMP)
	$(BIN)/tox

bench: $(STAMP)
	$(BIN)/cairn bench standard --config $(CONFIG) --output bench-results/latest.json

clean:
	rm -rf $(VENV) .tox .pytest_cache .hypothesis *.egg-info
