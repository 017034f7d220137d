# The two set-up commands of the README, and a few more. Each creates and uses
# the project's own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: report test demo up down benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m harness.locust_help >/dev/null
	touch $@ $(VENV)/.locust-help

# `locust -f ... --help` lists bridgestorm's options (harness/locust_help.py); also for a venv made before it
$(VENV)/.locust-help: $(VENV)/.installed harness/locust_help.py
	$(PY) -m harness.locust_help >/dev/null
	touch $@

## the main job: the flagship scenario (load + chaos) on the embedded stack, report in reports/<run-id>/
## (make itself exits 2 when the run exits non-zero; its "Error N" line is the run's code: README, Exit codes)
report: $(VENV)/.installed $(VENV)/.locust-help
	$(VENV)/bin/locust --config scenarios/flagship.conf

## the test suite, against the real embedded stack (and Docker, where it answers)
test: $(VENV)/.installed $(VENV)/.locust-help
	$(PY) -m pytest -p no:cacheprovider -q -rfEs

## the quick check: a few seconds of each flow (node, stamp, workflow) through the bus, with a report
demo: $(VENV)/.installed $(VENV)/.locust-help
	$(VENV)/bin/locust --config scenarios/demo.conf

up: $(VENV)/.installed
	$(PY) -m stack up

down: $(VENV)/.installed
	$(PY) -m stack down

## one table: ours vs an independent peer (aiokafka, kcat, wrk, direct TCP, pandas), side by side
benchmarks: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .bridgestorm .pytest_cache
