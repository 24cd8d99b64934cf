# The two commands of the README: `make demo` and `make test`. Both set everything up.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
FLASK  := $(VENV)/bin/flask --app examples.app
DB_URL  = $$($(PY) scripts/find_database.py)

.PHONY: demo test test-fast fuzz lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[dev]'
	@# mysqlclient (the optional mysql+mysqldb:// driver) builds against libmariadb/libmysqlclient.
	@if pkg-config --exists libmariadb || pkg-config --exists mysqlclient; then \
	  PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[mysqlclient]'; \
	else echo "note: mysqlclient not installed (no libmariadb-dev); its tests will skip"; fi
	touch $@

## demo: load the example app's sql/ into the database, then measure the three strategies.
demo: $(VENV)/.installed
	@url=$$($(PY) scripts/find_database.py --database poolkit_demo) || exit 1; export POOLKIT_DATABASE_URL="$$url"; \
	$(FLASK) initdb --create-database && \
	$(FLASK) headcount && \
	$(FLASK) pool-stress --seconds 3 --plot pool-stress.png

## test: ruff, mypy (strict on poolkit/) and every test, the stress and fault suites included.
test: lint
	@url=$(DB_URL) || exit 1; \
	POOLKIT_TEST_DATABASE_URL="$${POOLKIT_TEST_DATABASE_URL:-$$url}" $(VENV)/bin/pytest -m "" $(PYTEST_ARGS)

## test-fast: the default suite (no stress, no faults).
test-fast: $(VENV)/.installed
	@url=$(DB_URL) || exit 1; \
	POOLKIT_TEST_DATABASE_URL="$${POOLKIT_TEST_DATABASE_URL:-$$url}" $(VENV)/bin/pytest $(PYTEST_ARGS)

## fuzz: the differential testers with random seeds, FUZZ_SECONDS (default 600) each; a failing seed is printed.
FUZZ_SECONDS ?= 600
fuzz: $(VENV)/.installed
	@url=$(DB_URL) || exit 1; \
	POOLKIT_FUZZ_SECONDS=$(FUZZ_SECONDS) POOLKIT_TEST_DATABASE_URL="$${POOLKIT_TEST_DATABASE_URL:-$$url}" \
	  $(VENV)/bin/pytest -m fuzz -s $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	@url=$(DB_URL) || exit 1; export POOLKIT_DATABASE_URL="$$url"; \
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
