# Two commands on a fresh machine with Python 3.11 and pip:
#   make demo   reproduce every experiment on its quick settings and print where the report is
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rlvrlab-installed

.PHONY: demo test bench install clean

demo: $(STAMP)
	$(VENV)/bin/rlvrlab reproduce --quick --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/bandit.py

install: $(STAMP)

# torch goes in first and alone: `pip install torch==2.13.0` takes the CPU build on a CPU machine;
# asked for by another package it would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -c "import rlvrlab._setup_check as c; c.main()"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
