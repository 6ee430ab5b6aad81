# darknet-kd: setup, demo, test, bench.  Every target is idempotent: a second run
# does not reinstall (the setup stamp depends on the files that define the install).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# System packages the build needs (Debian names).
APT_PKGS := cmake g++ make libdnnl-dev libstb-dev libturbojpeg0-dev
# Python packages; torch 2.13.0 is the CPU build that lies on these machines' disk.
PIP_PKGS := torch==2.13.0 "numpy<3" "opencv-python-headless>=4.8,<5" "pycocotools>=2.0.7" \
            "pybind11>=2.12" "cffi>=1.16" "cmake>=3.25" ninja "tqdm>=4.66" "pytest>=8" \
            "matplotlib>=3.8" setuptools wheel

.PHONY: setup demo test bench clean
setup: $(STAMP)

$(STAMP): setup.py Makefile CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q $(PIP_PKGS)
	$(PIP) install -q --no-build-isolation --use-pep517 -e .
	ln -sfn ../../build/cmake/python/lib/dkd $(VENV)/bin/dkd  # the `dkd` CLI (RPATH: libdkd beside it)
	touch $(STAMP)

demo: setup
	$(PYTHON) scripts/demo.py

test: setup
	$(PYTHON) -m pytest -q tests

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

clean:
	rm -rf build *.egg-info $(VENV)
