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

demo: setup
	$(BIN)/xray-tasks synth $(DEMO_DIR)/source --patients 120 --archives 3 --image-size 256
	$(BIN)/xray-tasks ingest --profile demo --source $(DEMO_DIR)/source --workspace $(DEMO_DIR)/workspace

clean-demo:
	rm -rf $(DEMO_DIR)
