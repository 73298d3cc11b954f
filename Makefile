# cairn — the two set-up commands of the README, and a few more.
#   make run    start the local 3-member cluster (configs/local-3node.yaml) in the foreground
#   make test   run every test
#   make secure-keys   keys and certificates for configs/secure-3node.yaml, in secure/
# Both create the virtual environment in .venv first if it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/local-3node.yaml

.PHONY: run test test-long bench tox clean secure-keys

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
# many more fuzzing seeds against a live cluster and the apply path
# (tests/integration/test_fuzz.py, tests/store/test_apply_edges.py), and many
# more kill -9 rounds under write load (tests/integration/test_wal_crash.py).
CAIRN_FUZZ_SEEDS   ?= 10
CAIRN_FUZZ_SECONDS ?= 60
CAIRN_CRASH_ROUNDS ?= 40
test-long: $(STAMP)
	CAIRN_SIM_SCHEDULES=100000 $(BIN)/python -m pytest -q tests/raft -k simulation
	CAIRN_FUZZ_SEEDS=$(CAIRN_FUZZ_SEEDS) CAIRN_FUZZ_SECONDS=$(CAIRN_FUZZ_SECONDS) \
		$(BIN)/python -m pytest -q tests/integration/test_fuzz.py tests/store/test_apply_edges.py
	CAIRN_CRASH_ROUNDS=$(CAIRN_CRASH_ROUNDS) $(BIN)/python -m pytest -q tests/integration/test_wal_crash.py

tox: $(STAMP)
	$(BIN)/tox

bench: $(STAMP)
	$(BIN)/cairn bench standard --config $(CONFIG) --output bench-results/latest.json

# CURVE key pairs (cairn keygen) for the members and one client, and a self-signed
# TLS certificate for 127.0.0.1 plus a client certificate for the gateways.
secure-keys: $(STAMP)
	for name in n1 n2 n3 client; do test -e secure/keys/$$name.key || $(BIN)/cairn keygen secure/keys/$$name.key; done
	mkdir -p secure/tls && chmod 700 secure/tls
	for name in server client; do test -e secure/tls/$$name.crt || openssl req -x509 -newkey ec \
	  -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN=cairn-$$name \
	  -addext subjectAltName=IP:127.0.0.1 -keyout secure/tls/$$name.key -out secure/tls/$$name.crt 2>/dev/null; done

clean:
	rm -rf $(VENV) .tox .pytest_cache .hypothesis *.egg-info
