"""Per-process setup of a DriveSim rendering worker (the generator's pool, the benchmark).

* OpenCV runs single-threaded: the worker processes are the parallelism.
* glibc's malloc keeps freed memory for reuse.  A scene allocates and frees some twenty
  full-frame arrays of 0.2–2 MB (layers, then each domain's float32 temporaries).  By
  default glibc serves blocks that large with a fresh ``mmap`` and unmaps them on free, so
  every new array pays a page fault per 4 KiB page on first touch — about a third of the
  background drawing time at 416x416 (measured with bench/drivesim.py's workload).  Raising
  the mmap threshold and the trim threshold (``mallopt``) makes those blocks come from the
  heap, whose pages stay mapped.  Only glibc has ``mallopt`` with these parameters;
  elsewhere this is skipped.
"""
from __future__ import annotations

import ctypes
import sys

import cv2

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3      # glibc <malloc.h>
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20))


def keep_freed_memory() -> bool:
    """Apply :data:`MALLOC_SETTINGS` to this process; True when glibc accepted all three."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(k, v) == 1 for k, v in MALLOC_SETTINGS)


def setup() -> None:
    """What every DriveSim worker process runs first."""
    cv2.setNumThreads(1)
    keep_freed_memory()
