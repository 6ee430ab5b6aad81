"""Files in, files out: every output goes through a temporary name and a rename, so
an interrupted run leaves the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """``with atomic_open(p) as f:`` -- the file appears at ``p`` only when the block ends cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``, renamed to ``path`` when the block ends
    cleanly (for writers that want a file name, e.g. cv2.imwrite, torch.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
