# The two commands: `make run` and `make test`. Both bootstrap what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Parser scripts may run as other users: their interpreter must be one every user can run,
# so prefer the system's Python 3.11 to one installed under a home directory.
SANDBOX_BASE_PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo $(PYTHON))
VENV := .venv
SANDBOX_VENV := .venv-sandbox
APP_PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run test lint format deps sandbox clean bench

run: deps sandbox
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py ensure_dev_admin
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py loaddemo
	DEBUG=$${DEBUG:-true} $(APP_PY) manage.py runparseq --port $(PORT)

test: deps sandbox lint
	SECRET_KEY=$${SECRET_KEY:-parseq-test-only} LOG_LEVEL=$${LOG_LEVEL:-ERROR} $(APP_PY) manage.py test tests --noinput

# Several minutes; needs PostgreSQL and RabbitMQ (README: Performance). Tables go to bench/results/.
bench: deps sandbox
	mkdir -p bench/results
	$(APP_PY) bench/runner_overhead.py | tee bench/results/runner_overhead.txt
	$(APP_PY) bench/end_to_end.py
	$(APP_PY) bench/scrapyd_bench.py
	$(APP_PY) bench/report.py

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

deps: $(VENV)/.installed
sandbox: $(SANDBOX_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(APP_PY) || $(PYTHON) -m venv $(VENV)
	$(APP_PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

# The interpreter that runs parser scripts: only the libraries scripts may import.
$(SANDBOX_VENV)/.installed: sandbox-image/requirements.txt
	grep -qx "executable = $(realpath $(SANDBOX_BASE_PYTHON))" $(SANDBOX_VENV)/pyvenv.cfg 2>/dev/null || rm -rf $(SANDBOX_VENV)
	test -x $(SANDBOX_VENV)/bin/python || $(SANDBOX_BASE_PYTHON) -m venv $(SANDBOX_VENV)
	$(SANDBOX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r sandbox-image/requirements.txt
	touch $@

clean:
	rm -rf $(VENV) $(SANDBOX_VENV)
