# psyau_graph: set-up and entry points. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= flower,dp,test
DEMO_OUT ?= demo_output

.PHONY: install test test-fast test-loopback test-timing demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch 2.13.0 first: the CPU build on local disk. Anything unpinned would pull a CUDA build.
$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PY) -m pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# everything but the multi-process loopback federations (slow tests included)
test: $(STAMP)
	$(PY) -m pytest -q -m "not loopback"

# SuperLink + SuperNodes on 127.0.0.1: node authentication, killed nodes and servers (~30 min)
test-loopback: $(STAMP)
	$(PY) -m pytest -q -m "loopback and not timing"

# loopback tests whose outcome has depended on machine load (not run by CI; none at
# present: pytest's exit code 5, "no tests collected", counts as success)
test-timing: $(STAMP)
	$(PY) -m pytest -q -m timing || test $$? -eq 5

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/psyau demo --out $(DEMO_OUT)


clean:
	rm -rf $(VENV) build dist *.egg-info
