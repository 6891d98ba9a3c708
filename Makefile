# The two commands: `make run` and `make test`. Both bootstrap what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Parser scripts may run as other users: their interpreter must be one every user can run,
# so prefer the system's Python 3.11 to one installed under a home directory.
SANDBOX_BASE_PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo $(PYTHON))
VENV := .venv
SANDBOX_VENV := .venv-sandbox
APP_PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run test test-fast lint format deps sandbox clean bench bench-scale lock images

run: deps sandbox
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py ensure_dev_admin
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py loaddemo
	DEBUG=$${DEBUG:-true} PORT=$(PORT) $(APP_PY) manage.py runparseq

test: deps sandbox lint
	SECRET_KEY=$${SECRET_KEY:-parseq-test-only} LOG_LEVEL=$${LOG_LEVEL:-ERROR} $(APP_PY) manage.py test tests --noinput

# parseq:latest and parseq-sandbox:latest, on the engine `docker` talks to (README: Deploying).
images:
	deploy/build-images

# The edit-test loop, in about a minute on both cores: no browser, worker process or fuzzing (README: Tests).
FAST_TESTS := tests.access tests.alerts tests.api tests.core tests.scheduling tests.storage tests.deploy \
	tests.test_settings tests.test_logs tests.test_layers tests.test_metrics tests.test_database tests.test_host \
	tests.runner.test_protocol tests.client.test_package
# Both cores on PostgreSQL; SQLite's test database (a file in WAL mode) cannot be copied for a second process.
FAST_PARALLEL := $(if $(filter postgres%,$(DATABASE_URL)),auto,1)
test-fast: deps sandbox lint
	SECRET_KEY=$${SECRET_KEY:-parseq-test-only} LOG_LEVEL=$${LOG_LEVEL:-ERROR} \
		$(APP_PY) manage.py test $(FAST_TESTS) --exclude-tag slow --parallel $(FAST_PARALLEL) --noinput

# Several minutes; needs PostgreSQL and RabbitMQ (README: Performance). Tables go to bench/results/.
bench: deps sandbox
	mkdir -p bench/results
	$(APP_PY) bench/runner_overhead.py | tee bench/results/runner_overhead.txt
	$(APP_PY) bench/end_to_end.py
	$(APP_PY) bench/scrapyd_bench.py
	$(APP_PY) bench/report.py

# Scale (README: Performance): 1,000 sleeping parsers due at once on one worker host, 10,000 scheduled parsers, the
# lists at a million runs, and Scrapyd on the same 1,000 sleepers (about 70 minutes of the whole, at its default
# max_proc). `make bench-scale QUICK=1`: 100 sleepers, 1,000 scheduled parsers, 100,000 runs, in minutes.
bench-scale: deps sandbox
	mkdir -p bench/results
	$(APP_PY) bench/scale.py $(if $(QUICK),--quick)
	$(APP_PY) bench/scale.py --scheduler $(if $(QUICK),1000,10000)
	$(APP_PY) bench/list_pages.py $(if $(QUICK),--quick)
	$(APP_PY) bench/scrapyd_bench.py --sleepers $(if $(QUICK),100 --sleep 5,1000)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

deps: $(VENV)/.installed
sandbox: $(SANDBOX_VENV)/.installed

# The locks (*.txt, with hashes) are what gets installed; `make lock` writes them from the *.in files.
# The `parseq` client (client/) goes in editable, on its own: it has no dependencies, and a hashed lock holds no
# directory. (Quietly: setuptools warns at every editable install that a same-named folder could shadow it.)
$(VENV)/.installed: requirements.txt requirements-dev.txt client/pyproject.toml
	test -x $(APP_PY) || $(PYTHON) -m venv $(VENV)
	$(APP_PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt -r requirements-dev.txt
	PYTHONWARNINGS=ignore $(APP_PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -e client
	touch $@

# The interpreter that runs parser scripts: only the libraries scripts may import.
$(SANDBOX_VENV)/.installed: sandbox-image/requirements.txt
	grep -qx "executable = $(realpath $(SANDBOX_BASE_PYTHON))" $(SANDBOX_VENV)/pyvenv.cfg 2>/dev/null || rm -rf $(SANDBOX_VENV)
	test -x $(SANDBOX_VENV)/bin/python || $(SANDBOX_BASE_PYTHON) -m venv $(SANDBOX_VENV)
	$(SANDBOX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r sandbox-image/requirements.txt
	touch $@

# After changing a pin in requirements.in, requirements-dev.in or sandbox-image/requirements.in: the locks again.
# The sandbox's is resolved by its own interpreter (its Python version decides which releases fit).
PIP_COMPILE_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: deps
	$(APP_PY) -m piptools compile $(PIP_COMPILE_FLAGS) --output-file requirements.txt requirements.in
	$(APP_PY) -m piptools compile $(PIP_COMPILE_FLAGS) --output-file requirements-dev.txt requirements-dev.in
	test -x .venv-lock/bin/python || $(SANDBOX_BASE_PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check pip-tools==7.6.2
	.venv-lock/bin/python -m piptools compile $(PIP_COMPILE_FLAGS) \
		--output-file sandbox-image/requirements.txt sandbox-image/requirements.in

clean:
	rm -rf $(VENV) $(SANDBOX_VENV) .venv-lock
