VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

DEMO_DIR := .symbi-demo
DEMO_FOR ?= 20s

demo: $(STAMP)
	@mkdir -p $(DEMO_DIR)
	$(VENV)/bin/symbic check examples/
	$(VENV)/bin/symbic compile examples/ -o $(DEMO_DIR)/bundle.db
	$(VENV)/bin/symbi --store $(DEMO_DIR)/state.db up $(DEMO_DIR)/bundle.db --for $(DEMO_FOR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_DIR)
