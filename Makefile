# Two commands on a fresh machine:  `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv and install the pinned environment first when it is missing or out of date.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: setup test demo lint clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check xray_tasks tests bench

# The main job end to end through Airflow (ingest -> training -> scoring, `airflow dags test` on SQLite, local
# workspace and registry). NIH_DIR=/path/to/nih uses real NIH PNGs; XRAY_PROFILE=full the report's settings.
demo: setup
	DEMO_DIR=$(DEMO_DIR) scripts/demo.sh

clean-demo:
	rm -rf $(DEMO_DIR)
