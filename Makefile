# The project's two entry points (see README): `make demo` and `make test`.
# Each installs what it needs on a fresh machine and is quick when already installed.

VENV   := .venv
# The IaC scanners (checkov, trivy) live in their own venv: they constrain none of ours.
SCAN_VENV := .venv-scan
PY     := $(VENV)/bin/python
STAMPS := .stamps
# Node 22 LTS from npm (package "node") comes first on PATH for cdktf and jsii.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# cdktf asks HashiCorp for newer versions at every run; offline that only logs an error.
export CHECKPOINT_DISABLE := 1

.PHONY: demo test test-unit test-system lint lint-workflows setup synth scan bench bench-move clean

setup: $(STAMPS)/venv $(STAMPS)/npm

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(VENV)/bin/pip || python3 -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(STAMPS)/bench: pyproject.toml $(STAMPS)/venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMPS)/venv-scan: stacks/scan-requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(SCAN_VENV)/bin/pip || python3 -m venv --clear $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --disable-pip-version-check -r stacks/scan-requirements.txt
	@touch $@

demo: setup
	$(VENV)/bin/nucleus-provision demo

lint: setup
	$(VENV)/bin/ruff check src tests stacks bench main.py
	$(VENV)/bin/ruff format --check src tests stacks bench main.py
	$(VENV)/bin/mypy

# Fast and pure: planner, concerns, guard rail, config, parity, house (no server, no subprocess).
test-unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# Against the real thing: the emulation, the real CLI, the Connector, cdktf synth. One
# pytest-xdist worker per core, each with its own emulations; whole files per worker, and the
# stack tests together on one (tests/conftest.py says why). PYTEST_XDIST= runs them serially.
PYTEST_XDIST ?= -n auto --dist loadfile --no-loadscope-reorder
test-system: setup
	$(VENV)/bin/pytest tests/system $(PYTEST_XDIST) $(PYTEST_ARGS)

# The scanner gate: checkov and trivy on every synthesized stack, offline; fails on any
# failed check not waived in stacks/scan-waivers.toml (see stacks/scan.py).
scan: setup $(STAMPS)/venv-scan
	$(PY) -m stacks.scan

# The CI workflows (.github/workflows/), checked by actionlint offline (from the scan venv).
lint-workflows: $(STAMPS)/venv-scan
	PATH="$(CURDIR)/$(SCAN_VENV)/bin:$$PATH" actionlint -no-color .github/workflows/*.yml

# The scanner gate runs inside test-system (tests/system/stacks/test_stack_scan.py runs
# `stacks.scan.run_gate` on the real environments.toml and asserts more than `make scan`
# does), so `test` only installs the scanners instead of running the gate a second time.
test: lint lint-workflows $(STAMPS)/venv-scan test-unit test-system

synth: setup
	cdktf synth

# Every benchmark of docs/benchmarks.md, each as documented there (each starts and stops its
# own emulation; nothing needs to be set in the shell). The move's takes several minutes.
bench: setup $(STAMPS)/bench
	$(PY) bench/run.py
	$(PY) bench/connect_bench.py
	$(PY) bench/synth_bench.py
	$(PY) bench/noop_bench.py
	$(PY) bench/statements_bench.py
	$(PY) bench/help_bench.py
	$(PY) bench/verify_bench.py
	$(PY) bench/parse_bench.py
	$(PY) bench/stall_bench.py
	$(PY) bench/diff_bench.py
	$(PY) bench/move_bench.py
	$(PY) bench/retire_bench.py

# Phase 4's move alone, on 1M entities + 2M interests (several minutes; docs/benchmarks.md).
bench-move: setup
	$(PY) bench/move_bench.py

clean:
	rm -rf $(VENV) $(SCAN_VENV) node_modules $(STAMPS) cdktf.out
