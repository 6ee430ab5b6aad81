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

.PHONY: setup demo test bench clean core-test cuda-check asan-test
BUILD := build/cmake
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
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

test: setup core-test cuda-check
	$(PYTHON) -m pytest -q tests

# The C++ tests of the core (ctest in the build that `make setup` made).
core-test: setup
	$(VENV)/bin/ctest --test-dir $(BUILD) --output-on-failure

# With nvcc present: the ops' CUDA kernels must have been compiled for sm_80 and sm_90 (the
# embedded cubins, listed by cuobjdump, or their names in the object when it is missing).
cuda-check: setup
	@if [ -z "$(NVCC)" ]; then echo "cuda-check: nvcc not found, skipped"; exit 0; fi; \
	objs=$$(find $(BUILD) -path '*dkd_cuda_ops.dir*' -name '*.o' | sort); \
	[ -n "$$objs" ] || { echo "cuda-check: nvcc exists but no CUDA objects were built"; exit 1; }; \
	list="strings"; command -v cuobjdump >/dev/null && list="cuobjdump --list-elf"; \
	for o in $$objs; do for a in sm_80 sm_90; do \
	  $$list $$o | grep -q $$a || { echo "cuda-check: $$o has no $$a code"; exit 1; }; done; \
	  echo "cuda-check: $$(basename $$o) compiled for sm_80 and sm_90"; done

# AddressSanitizer + UBSan build of libdkd, _C and the C++ tests (build/asan, CPU only),
# then the C++ tests and the op tests against it (the ASan runtime preloaded into Python).
asan-test: setup
	$(VENV)/bin/cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDKD_SANITIZE=ON \
	  -DPython_EXECUTABLE=$(abspath $(PYTHON)) -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja)
	$(VENV)/bin/cmake --build build/asan --parallel
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(VENV)/bin/ctest --test-dir build/asan --output-on-failure
	LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  DKD_C_MODULE=$$(ls $(abspath build/asan)/python/_C*.so) DKD_LIBDKD=$(abspath build/asan)/python/lib/libdkd.so \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_ops_nms.py tests/test_ops_yolo_decode.py \
	  tests/test_ops_kd_loss.py tests/test_capi.py
	LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  DKD_C_MODULE=$$(ls $(abspath build/asan)/python/_C*.so) DKD_LIBDKD=$(abspath build/asan)/python/lib/libdkd.so \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_engine_winograd.py \
	  -k "(errors or fuzz or cffi or threads or winograd_equals or concat) and not cli"

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

clean:
	rm -rf build *.egg-info $(VENV)
