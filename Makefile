# Two commands on a fresh machine:  `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv and install the pinned environment first when it is missing or out of date.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_DIR ?= demo
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). Each test module runs whole on one worker (tests/conftest.py).
PYTEST_WORKERS ?= 2

.PHONY: setup test demo lint clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@py=$(BIN)/python; test -x $$py || py=$(PYTHON); v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); case "$$v" in 3.9|3.1[012]) echo "Python $$v ($$py): supported (TensorFlow 2.17 needs 3.9-3.12)";; *) echo "Python $$v ($$py) is not supported: TensorFlow 2.17 needs 3.9-3.12; run e.g. make PYTHON=python3.12 (and remove $(VENV) if it was made with $$v)" >&2; exit 1;; esac
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check xray_tasks tests bench

# The main job end to end through Airflow (ingest -> training -> scoring, `airflow dags test` on SQLite, local
# workspace and registry). NIH_DIR=/path/to/nih uses real NIH PNGs; XRAY_PROFILE=full the report's settings.
demo: setup
	DEMO_DIR=$(DEMO_DIR) scripts/demo.sh

clean-demo:
	rm -rf $(DEMO_DIR)
