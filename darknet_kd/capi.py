"""libdkd's C API through cffi (ABI mode): what a C, Go or Rust program sees, usable from
Python without the pybind11 module.

The declarations come from the header itself (``dkd/dkd.h``: the copy installed beside
libdkd in ``darknet_kd/lib/``, else ``csrc/include/``), so this binding cannot drift from
the library.  ``$DKD_LIBDKD`` may name another build of libdkd (the sanitizer run uses it).

    from darknet_kd import capi
    lib, ffi = capi.lib(), capi.ffi()
    capi.check(lib.dkd_nms(...))          # raises OpError with dkd_last_error()
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from .errors import OpError

PKG = Path(__file__).resolve().parent
HEADER_PLACES = (PKG / "lib" / "dkd.h", PKG.parent / "csrc" / "include" / "dkd" / "dkd.h")
LIB_PLACES = (PKG / "lib" / "libdkd.so",)


def header_path() -> Path:
    for p in HEADER_PLACES:
        if p.exists():
            return p
    raise OpError(f"dkd.h not found in {', '.join(map(str, HEADER_PLACES))}; build the core (make setup)")


def cdef_from_header(text: str) -> str:
    """The declarations cffi needs from dkd.h: comments removed, the include guard kept,
    other conditional blocks (C++ and export macros) dropped, integer #defines kept."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out, skip = [], 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            d = s[1:].strip()
            if d.startswith(("if", "ifdef", "ifndef")):
                if skip or not d.startswith("ifndef DKD_DKD_H"):
                    skip += 1
            elif d.startswith("endif"):
                skip = max(skip - 1, 0)
            elif not skip and re.fullmatch(r"define\s+\w+\s+-?\d+", d):
                out.append("#" + d)
            continue
        if not skip:
            out.append(line.replace("DKD_API ", ""))
    return "\n".join(out)


@lru_cache(maxsize=None)
def _load():
    try:
        from cffi import FFI
    except ImportError as e:  # pragma: no cover - cffi is a dependency
        raise OpError(f"cffi is not installed: {e}") from e
    ffi = FFI()
    ffi.cdef(cdef_from_header(header_path().read_text()))
    path = os.environ.get("DKD_LIBDKD")
    if not path:
        found = [p for p in LIB_PLACES if p.exists()]
        if not found:
            raise OpError(f"libdkd.so not found in {', '.join(map(str, LIB_PLACES))}; build the core (make setup)")
        path = str(found[0])
    return ffi, ffi.dlopen(path)


def ffi():
    """The cffi FFI holding dkd.h's declarations."""
    return _load()[0]


def lib():
    """libdkd, opened with cffi (``lib.dkd_version()``, ``lib.dkd_nms(...)``, ...)."""
    return _load()[1]


def last_error() -> str:
    return ffi().string(lib().dkd_last_error()).decode()


def check(status: int) -> None:
    """Raises OpError("DKD_ERR_...: message") for a non-zero dkd_status."""
    if status != 0:
        name = ffi().string(lib().dkd_status_name(status)).decode()
        raise OpError(f"{name}: {last_error()}")
