# `make run` and `make test` set up .venv on first use (torch==2.13.0 first, then everything
# else under requirements/constraints.txt so nothing can replace it), then do their job.
PY ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.installed
REQS := $(wildcard requirements/*.txt) pyproject.toml

.PHONY: run test bench venv clean system-deps

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

# Orthanc + its DICOMweb plugin for tests/pacs (a private Orthanc per test module). Installed only
# when missing and we are root; the package's own service is kept from starting (a temporary
# policy-rc.d answering 101, unless one exists). Otherwise the command is printed, the tests skip.
ORTHANC_BIN ?= /usr/sbin/Orthanc
ORTHANC_INSTALL := apt-get install -y --no-install-recommends orthanc orthanc-dicomweb
system-deps:
	@if [ -x $(ORTHANC_BIN) ] && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Orthanc for tests/pacs: $(ORTHANC_INSTALL)"; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\nexit 101\n' > $$policy; chmod 755 $$policy; fi; \
	  DEBIAN_FRONTEND=noninteractive $(ORTHANC_INSTALL) >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(ORTHANC_INSTALL) >/dev/null; } \
	    || echo "could not install Orthanc; tests/pacs will skip (run: $(ORTHANC_INSTALL))"; \
	  if [ -n "$$policy" ]; then rm -f $$policy; fi; \
	else echo "Orthanc missing; tests/pacs will skip. Install it (as root): $(ORTHANC_INSTALL)"; fi

test: $(STAMP) system-deps
	$(VPY) -m pytest -q --durations=30 tests

bench: $(STAMP)
	$(VENV)/bin/medvl bench --json bench.json

clean:
	rm -rf $(VENV) .pytest_cache
