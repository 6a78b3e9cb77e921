# `make run` and `make test` set up .venv on first use (torch==2.13.0 first, then everything
# else under requirements/constraints.txt so nothing can replace it), then do their job.
PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.installed
REQS := $(wildcard requirements/*.txt) pyproject.toml

.PHONY: run test bench venv clean

venv: $(STAMP)

$(STAMP): $(REQS)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/server.txt -r requirements/language.txt -r requirements/slicer.txt -r requirements/batch.txt -r requirements/dicom.txt
	$(PIP) install -q --no-deps -r requirements/nodeps.txt
	$(PIP) install -q -c requirements/constraints.txt -r requirements/sam2.txt
	SAM2_BUILD_CUDA=0 $(PIP) install -q -c requirements/constraints.txt --no-build-isolation --no-deps sam2==1.1.0
	$(PIP) install -q --no-deps -e .
	$(VPY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch is ' + v + ', must stay 2.13.0')"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/medvl serve

test: $(STAMP)
	$(VPY) -m pytest -q --durations=30 tests

bench: $(STAMP)
	$(VENV)/bin/medvl bench --json bench.json

clean:
	rm -rf $(VENV) .pytest_cache
