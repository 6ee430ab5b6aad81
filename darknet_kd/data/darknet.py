"""Darknet's dataset files: ``.data``, ``.names``, image lists and label files.

The one implementation of these formats in the project (converters, DriveSim, the
loaders, the evaluator and ``darknet-kd check`` all go through here).

Formats (AlexeyAB/darknet):

* ``.data`` (option_list.c:read_data_cfg): ``key=value`` lines; blank lines and lines
  starting with ``#`` or ``;`` are skipped.  Known keys: ``classes``, ``train``, ``valid``,
  ``names``, ``backup``; any other key (``difficult``, ``eval``, ``map``, ...) is kept in
  ``DataConfig.extra`` in file order.  Darknet strips *all* whitespace from a line and
  takes the *first* of duplicated keys; here whitespace around key and value is
  stripped (inner spaces kept), a line without ``=`` or a duplicated key is an error.
* ``.names``: one class name a line, the line index is the class id.
* list files (data.c:get_paths): one image path a line.
* label files (data.c:read_boxes): one ``class cx cy w h`` line per object, all
  relative to the image size; a missing label file means "no objects".
* image path -> label path: utils.c:replace_image_to_label, see :func:`label_path`.

Relative paths.  Darknet opens every relative path (in a ``.data``, in a list file)
relative to the *current directory*.  Here a relative path is resolved against the
current directory first (Darknet's rule) and, when nothing exists there, against the
folder of the ``.data`` file that names it (for list entries: that folder, then the
folder of the list file).  Writers (:func:`write_data_file`, :func:`write_list`) store paths that lie
under the dataset root relative to that root (by default the folder of the file being
written), so a dataset folder can be moved: it works from any directory here, and in
Darknet when Darknet is started in the folder that holds the ``.data`` file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write

KNOWN_KEYS = ("classes", "train", "valid", "names", "backup")
#: How far outside [0, 1] a label coordinate or box edge may lie before it is an error
#: (rounding in label tools); Darknet itself clips edges to [0, 1] (data.c:correct_boxes).
COORD_TOL = 1e-3

# utils.c:replace_image_to_label, in Darknet's order; each replaces the first occurrence.
_DIR_RULES = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")  # what %f reads; no nan/inf
_IMAGE_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM",
               ".tiff", ".TIFF")


# ---------------------------------------------------------------- path resolution

def resolve_path(p, *anchors) -> Path:
    """Darknet's relative-path rule plus our fallback: ``p`` as is when absolute or when it
    exists relative to the current directory, else relative to the first anchor folder
    where it exists, else relative to the first anchor (so errors show a useful path)."""
    p = Path(p)
    if p.is_absolute() or p.exists() or not anchors:
        return p
    for a in anchors:
        q = Path(a) / p
        if q.exists():
            return q
    return Path(anchors[0]) / p


def _portable(p, root: Path) -> str:
    """``p`` as written into a dataset file: relative to ``root`` when it lies under it
    (a moveable dataset), else unchanged; always with forward slashes."""
    p = Path(p)
    if p.is_absolute():
        try:
            p = Path(os.path.relpath(p, Path(root).resolve()))
            if p.parts and p.parts[0] == "..":
                p = Path(os.path.abspath(Path(root).resolve() / p))
        except ValueError:  # other drive (Windows)
            pass
    return p.as_posix()


def _read_text(path, what: str) -> list[str]:
    """The lines of a text file (CRLF and a UTF-8 BOM accepted), or a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise DataError(f"{what} is a directory", path) from None
    except OSError as e:
        raise DataError(f"cannot read {what}: {e.strerror}", path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{what} is not UTF-8 text (byte {e.start})", path, line) from None
    if "\x00" in text:
        raise DataError(f"{what} contains NUL bytes (a binary file?)", path, text[: text.index("\x00")].count("\n") + 1)
    return text.splitlines()


# ---------------------------------------------------------------- .data

@dataclass
class DataConfig:
    """A parsed ``.data`` file.  Path-valued fields hold the text as written; use
    :meth:`resolve` (or :meth:`images`) to get paths that open."""

    classes: int
    train: str | None = None
    valid: str | None = None
    names: str | None = None
    backup: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def root(self) -> Path:
        """The folder of the ``.data`` file (the fallback anchor for relative paths)."""
        return Path(self.path).parent if self.path is not None else Path(".")

    def get(self, key: str) -> str | None:
        return getattr(self, key) if key in KNOWN_KEYS else self.extra.get(key)

    def resolve(self, key: str) -> Path:
        """The path stored under ``key`` resolved as the module docstring says."""
        value = self.get(key)
        if value is None:
            raise DataError(f"no '{key}=' entry", self.path)
        return resolve_path(value, self.root)

    def images(self, key: str = "train") -> list[Path]:
        """The image paths of the list file under ``key`` (``train``, ``valid``, ...)."""
        list_path = self.resolve(key)
        return read_list(list_path, anchors=(self.root,))

    def class_names(self) -> list[str]:
        """The ``names=`` file, checked against ``classes=``."""
        names = read_names(self.resolve("names"))
        if len(names) != self.classes:
            raise DataError(f"classes={self.classes} but the names file {self.names} has {len(names)} names",
                            self.path, self._lines.get("classes"))
        return names

    def items(self):
        """All entries: the known keys (classes, train, valid, names, backup), then ``extra``
        in file order."""
        out = {k: getattr(self, k) for k in KNOWN_KEYS if getattr(self, k) is not None}
        return {**out, **self.extra}.items()

    #: line number of each key in the file (for error messages)
    _lines: dict = field(default_factory=dict, repr=False, compare=False)


def read_data_file(path) -> DataConfig:
    """Parse a Darknet ``.data`` file (option_list.c:read_data_cfg), strictly."""
    path = Path(path)
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for n, raw in enumerate(_read_text(path, ".data file"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise DataError(f"expected 'key=value', got {raw.strip()!r}", path, n)
        key, value = (s.strip() for s in line.split("=", 1))
        if not key:
            raise DataError("a line starts with '=' (no key)", path, n)
        if not value:
            raise DataError(f"'{key}=' has no value", path, n)
        if key in values:
            raise DataError(f"'{key}' repeats line {lines[key]} (Darknet would silently use the first)", path, n)
        values[key], lines[key] = value, n
    if "classes" not in values:
        raise DataError("no 'classes=' entry", path)
    try:
        classes = int(values["classes"])
    except ValueError:
        raise DataError(f"classes={values['classes']!r} is not an integer", path, lines["classes"]) from None
    if classes < 1:
        raise DataError(f"classes={classes} must be positive", path, lines["classes"])
    cfg = DataConfig(classes=classes, path=path,
                     extra={k: v for k, v in values.items() if k not in KNOWN_KEYS},
                     **{k: values.get(k) for k in KNOWN_KEYS if k != "classes"})
    cfg._lines = lines
    return cfg


def write_data_file(path, cfg) -> None:
    """Write a ``.data`` file from a DataConfig or a dict (``classes`` required; other
    values may be str or Path; absolute paths under the file's folder are written
    relative to it)."""
    path = Path(path)
    items = dict(cfg.items()) if isinstance(cfg, DataConfig) else dict(cfg)
    if "classes" not in items:
        raise DataError("a .data file needs 'classes'", path)
    classes = items["classes"]
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise DataError(f"classes={classes!r} must be a positive integer", path)
    out = []
    for k, v in items.items():
        if v is None:
            continue
        k = str(k)
        if not k or any(c in k for c in "=\n\r#;") or k != k.strip():
            raise DataError(f"invalid .data key {k!r}", path)
        text = str(v) if isinstance(v, (int, np.integer, float, str)) else _portable(v, path.parent)
        if "\n" in text or "\r" in text or not text.strip():
            raise DataError(f"invalid value for '{k}': {text!r}", path)
        out.append(f"{k}={text}\n")
    atomic_write(path, "".join(out))


# ---------------------------------------------------------------- .names

def read_names(path) -> list[str]:
    """Class names, one a line (trailing blank lines ignored; a blank name inside the
    list or a duplicated name is an error: it would shift or merge class ids)."""
    path = Path(path)
    lines = [s.strip() for s in _read_text(path, "names file")]
    while lines and not lines[-1]:
        lines.pop()
    seen: dict[str, int] = {}
    for n, name in enumerate(lines, 1):
        if not name:
            raise DataError("empty class name (every line is a class id)", path, n)
        if name in seen:
            raise DataError(f"class name {name!r} repeats line {seen[name]}", path, n)
        seen[name] = n
    if not lines:
        raise DataError("names file has no class names", path)
    return lines


def write_names(path, names) -> None:
    names = [str(n) for n in names]
    for i, n in enumerate(names):
        if not n.strip() or "\n" in n or "\r" in n or n != n.strip():
            raise DataError(f"invalid class name {n!r} (class {i})", path)
    if len(set(names)) != len(names):
        raise DataError("duplicated class names", path)
    atomic_write(path, "".join(n + "\n" for n in names))


# ---------------------------------------------------------------- lists

def read_list(path, anchors=()) -> list[Path]:
    """Image paths of a list file (blank lines skipped), resolved against the current
    directory, then ``anchors`` (the .data folder when read through DataConfig.images),
    then the list file's folder; a path found nowhere is given relative to the first."""
    path = Path(path)
    bases = (*anchors, path.parent)
    return [resolve_path(s.strip(), *bases) for s in _read_text(path, "list file") if s.strip()]


def write_list(path, paths, root=None) -> None:
    """Write one path a line; absolute paths under ``root`` (default: the list file's
    folder) are written relative to it."""
    path = Path(path)
    root = path.parent if root is None else Path(root)
    lines = []
    for p in paths:
        s = _portable(p, root)
        if "\n" in s or "\r" in s or not s.strip():
            raise DataError(f"invalid image path {s!r}", path)
        lines.append(s + "\n")
    atomic_write(path, "".join(lines))


# ---------------------------------------------------------------- labels

def label_path(image_path) -> Path:
    """Darknet's utils.c:replace_image_to_label: the first ``/images/{train,val}{2017,2014}/``
    becomes ``/labels/...``, the first ``/JPEGImages/`` becomes ``/labels/`` (also with
    backslashes; a bare ``/images/`` is kept), then a trailing .jpg/.jpeg/.png/.bmp/.ppm/.tiff
    (all lower or all upper case only) becomes .txt."""
    s = str(image_path).strip(" \t")
    for orig, rep in _DIR_RULES:
        s = s.replace(orig, rep, 1)
    for ext in _IMAGE_EXTS:
        if s.endswith(ext):
            s = s[: -len(ext)] + ".txt"
            break
    if not s.endswith(".txt") or s == ".txt":
        raise DataError("cannot infer the label file name: Darknet only knows the image extensions "
                        ".jpg .jpeg .png .bmp .ppm .tiff (all lower or all upper case)", image_path)
    return Path(s)


def parse_labels(lines, path, num_classes: int | None = None, tol: float = COORD_TOL, dtype=np.float32) -> np.ndarray:
    """Validate label lines (see :func:`read_labels`); ``path`` names them in errors."""
    rows = []
    for n, raw in enumerate(lines, 1):
        f = raw.split()
        if not f:
            continue
        if len(f) != 5:
            raise DataError(f"expected 5 fields 'class cx cy w h', got {len(f)}", path, n)
        if not _INT.match(f[0]):
            raise DataError(f"class id {f[0]!r} is not an integer", path, n)
        cls = int(f[0])
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            rng = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            raise DataError(f"class id {cls} is outside {rng}", path, n)
        for v in f[1:]:
            if not _FLOAT.match(v):
                raise DataError(f"{v!r} is not a number", path, n)
        x, y, w, h = (float(v) for v in f[1:])
        if w <= 0 or h <= 0:
            raise DataError(f"box size w={w:g} h={h:g} must be positive", path, n)
        for name, v in (("cx", x), ("cy", y), ("w", w), ("h", h), ("left edge", x - w / 2),
                        ("right edge", x + w / 2), ("top edge", y - h / 2), ("bottom edge", y + h / 2)):
            if v < -tol or v > 1 + tol:
                raise DataError(f"{name} = {v:g} is outside [0, 1] (labels are relative to the image size)",
                                path, n)
        rows.append((cls, x, y, w, h))
    return np.asarray(rows, dtype=dtype).reshape(-1, 5)


def read_labels(path, num_classes: int | None = None, tol: float = COORD_TOL, dtype=np.float32) -> np.ndarray:
    """A label file as an (N, 5) float32 array ``[cls, cx, cy, w, h]``; a missing file is
    an image without objects (as in Darknet's read_boxes).  Strict: wrong field count,
    non-numbers, class outside ``0..num_classes-1``, coordinates or box edges outside
    [0, 1] by more than ``tol``, and zero/negative sizes are DataErrors naming file:line
    (Darknet would skip, clip or misread such lines silently).  ``dtype=np.float64`` keeps
    all the digits written (the converters' exact round trips)."""
    path = Path(path)
    if not path.exists():
        return np.zeros((0, 5), dtype)
    return parse_labels(_read_text(path, "label file"), path, num_classes, tol, dtype)


def _fmt(v, double: bool) -> str:
    """``%f`` as Darknet writes, with more digits when needed to read back the same
    float32 (or float64 when ``double``)."""
    if double:
        v = float(v)
        s = f"{v:.6f}"
        return s if float(s) == v else np.format_float_positional(v, unique=True, trim="-")
    v32 = np.float32(v)
    s = f"{float(v32):.6f}"
    return s if np.float32(s) == v32 else np.format_float_positional(v32, unique=True, trim="-")


def format_labels(labels) -> str:
    """Label lines for an (N, 5) array (class, cx, cy, w, h); float64 input keeps float64
    precision, anything else float32."""
    double = np.asarray(labels).dtype == np.float64
    a = np.asarray(labels, dtype=np.float64)
    if a.size == 0:
        return ""
    if a.ndim != 2 or a.shape[1] != 5:
        raise DataError(f"labels must be an (N, 5) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError("labels contain NaN or infinity")
    if (a[:, 0] != np.round(a[:, 0])).any() or (a[:, 0] < 0).any():
        raise DataError("class ids must be non-negative integers")
    return "".join(f"{int(r[0])} " + " ".join(_fmt(v, double) for v in r[1:]) + "\n" for r in a)


def write_labels(path, labels) -> None:
    """Write a label file (``%d %f %f %f %f`` lines; values read back exactly: float32
    ones with read_labels, float64 ones with ``read_labels(..., dtype=np.float64)``)."""
    try:
        text = format_labels(labels)
    except DataError as e:
        raise DataError(e.message, path) from None
    atomic_write(path, text)
