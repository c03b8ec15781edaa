# The project's two entry points (see README): `make demo` and `make test`.
# Each installs what it needs on a fresh machine and is quick when already installed.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := .stamps
# Node 22 LTS from npm (package "node") comes first on PATH for cdktf and jsii.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# cdktf asks HashiCorp for newer versions at every run; offline that only logs an error.
export CHECKPOINT_DISABLE := 1

.PHONY: demo test lint setup synth bench clean

setup: $(STAMPS)/venv $(STAMPS)/npm

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(VENV)/bin/nucleus-provision demo

lint: setup
	$(VENV)/bin/ruff check src tests stacks bench main.py
	$(VENV)/bin/ruff format --check src tests stacks bench main.py

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

synth: setup
	cdktf synth

bench: setup
	$(PY) bench/run.py
	$(PY) bench/connect_bench.py
	$(PY) bench/synth_bench.py

clean:
	rm -rf $(VENV) node_modules $(STAMPS) cdktf.out
