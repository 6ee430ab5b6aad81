"""Darknet .cfg parser: the one cfg parser of the Python side.

Syntax as Darknet reads it (src/parser.c:read_cfg, utils.c:strip): every line is
stripped of all whitespace; lines starting with ``#`` or ``;`` and blank lines are
comments; ``[name]`` opens a section; everything else is ``key=value``.  We also
drop a trailing ``# comment`` after a value (Darknet's atoi/atof would stop there
too; for strings it would silently turn the value into garbage).

Options are typed when read, with Darknet's defaults, and every read marks the
option used; after the network is built, :meth:`Cfg.warn_unused` emits one
warning per field nobody read, as Darknet prints ``Unused field``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CfgError
from .fileio import atomic_write

# Section names Darknet knows (parser.c:string_to_layer_type), with its aliases.
ALIASES = {
    "network": "net", "conv": "convolutional", "max": "maxpool", "avg": "avgpool",
    "conn": "connected", "soft": "softmax", "local_avg": "local_avgpool", "empty": "silence",
}
SUPPORTED = {"net", "convolutional", "maxpool", "route", "shortcut", "upsample", "yolo",
             "dropout", "avgpool"}
DARKNET_ONLY = {"scale_channels", "sam", "crop", "cost", "detection", "region", "gaussian_yolo",
                "local", "deconvolutional", "activation", "logistic", "l2norm", "crnn", "gru", "lstm",
                "conv_lstm", "history", "rnn", "connected", "local_avgpool", "reorg3d", "reorg",
                "lrn", "normalization", "batchnorm", "softmax", "contrastive", "silence", "implicit"}

_TRUE = {"1"}
_FALSE = {"0"}


class CfgWarning(UserWarning):
    """An option Darknet accepts but nothing reads (Darknet's 'Unused field')."""


@dataclass
class Option:
    key: str
    value: str
    line: int
    used: bool = False


@dataclass
class Section:
    """One ``[name]`` block.  ``index`` is the Darknet layer index (-1 for [net])."""

    name: str
    line: int
    path: str
    index: int
    options: dict[str, Option] = field(default_factory=dict)

    # -- errors ---------------------------------------------------------------
    def error(self, message: str, key: str | None = None) -> CfgError:
        line = self.options[key].line if key in self.options else self.line
        where = f"[{self.name}]" if self.index < 0 else f"layer {self.index} [{self.name}]"
        return CfgError(f"{where}: {message}", self.path, line)

    # -- typed getters ----------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.options

    def raw(self, key: str, default: str | None = None) -> str | None:
        opt = self.options.get(key)
        if opt is None:
            return default
        opt.used = True
        return opt.value

    def get_str(self, key: str, default: str | None = None) -> str | None:
        return self.raw(key, default)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        v = self.raw(key)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise self.error(f"{key}={v!r} is not an integer", key) from None

    def get_float(self, key: str, default: float | None = None) -> float | None:
        v = self.raw(key)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise self.error(f"{key}={v!r} is not a number", key) from None

    def get_bool(self, key: str, default: bool = False) -> bool:
        v = self.get_int(key, None)
        return default if v is None else v != 0

    def get_ints(self, key: str, default: list[int] | None = None) -> list[int] | None:
        v = self.raw(key)
        if v is None:
            return default
        try:
            return [int(x) for x in v.split(",") if x != ""]
        except ValueError:
            raise self.error(f"{key}={v!r} is not a list of integers", key) from None

    def get_floats(self, key: str, default: list[float] | None = None) -> list[float] | None:
        v = self.raw(key)
        if v is None:
            return default
        try:
            return [float(x) for x in v.split(",") if x != ""]
        except ValueError:
            raise self.error(f"{key}={v!r} is not a list of numbers", key) from None

    def get_choice(self, key: str, choices, default: str) -> str:
        v = self.raw(key, default)
        if v not in choices:
            raise self.error(f"{key}={v!r}: expected one of {', '.join(sorted(choices))}", key)
        return v

    def mark_used(self, *keys: str) -> None:
        """Keys Darknet reads but that change nothing here (e.g. GPU-only switches)."""
        for k in keys:
            if k in self.options:
                self.options[k].used = True

    def unused(self) -> list[Option]:
        return [o for o in self.options.values() if not o.used]


@dataclass
class Cfg:
    path: str
    net: Section
    layers: list[Section]

    def warn_unused(self) -> list[str]:
        msgs = []
        for sec in [self.net, *self.layers]:
            for opt in sec.unused():
                msg = f"{self.path}:{opt.line}: unused field '{opt.key} = {opt.value}' in [{sec.name}]"
                warnings.warn(msg, CfgWarning, stacklevel=3)
                msgs.append(msg)
        return msgs

    def to_text(self) -> str:
        """Write the cfg back (values as read); used to save a cfg beside weights."""
        out = []
        for sec in [self.net, *self.layers]:
            out.append(f"[{sec.name}]")
            out.extend(f"{o.key}={o.value}" for o in sec.options.values())
            out.append("")
        return "\n".join(out)


def _strip(line: str) -> str:
    return "".join(line.split())


def parse_cfg_text(text: str, path: str = "<string>") -> Cfg:
    sections: list[Section] = []
    current: Section | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip(raw)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"malformed section header {raw.strip()!r}", path, lineno)
            name = line[1:-1].lower()
            name = ALIASES.get(name, name)
            if name not in SUPPORTED:
                if name in DARKNET_ONLY:
                    raise CfgError(f"section [{name}] is a Darknet layer that darknet-kd does not support", path, lineno)
                raise CfgError(f"unknown section [{name}]", path, lineno)
            if name == "net" and sections:
                raise CfgError("[net] must be the first section and appear once", path, lineno)
            if name != "net" and not sections:
                raise CfgError(f"the first section must be [net], not [{name}]", path, lineno)
            current = Section(name, lineno, path, len(sections) - 1)
            sections.append(current)
            continue
        if current is None:
            raise CfgError(f"option {raw.strip()!r} before the first section", path, lineno)
        if "#" in line:
            line = line.split("#", 1)[0]
        key, sep, value = line.partition("=")
        if not sep or not key or not value:
            raise CfgError(f"malformed line {raw.strip()!r}: expected key=value", path, lineno)
        if key in current.options:
            # Darknet's option_find returns the first occurrence; the repeat is unused.
            warnings.warn(f"{path}:{lineno}: duplicate field '{key}' in [{current.name}]; Darknet uses "
                          f"the first (line {current.options[key].line})", CfgWarning, stacklevel=2)
            continue
        current.options[key] = Option(key, value, lineno)
    if not sections:
        raise CfgError("no sections: not a Darknet cfg", path, 1)
    if len(sections) < 2:
        raise CfgError("no layers after [net]", path, sections[0].line)
    return Cfg(path, sections[0], sections[1:])


def parse_cfg(path) -> Cfg:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CfgError(f"cannot read cfg: {e.strerror}", p) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CfgError(f"not a text file (invalid UTF-8 at byte {e.start})", p, offset=e.start) from None
    return parse_cfg_text(text, str(p))


def sized_cfg(cfg_path, size: int, folder, scale_anchors: bool = False, name: str | None = None) -> Path:
    """``folder/name`` (default: the cfg's own file name): a copy of ``cfg_path`` with [net]
    width and height set to ``size`` — OpenCV, the engine and the trainer read the input size
    from the cfg.  With ``scale_anchors`` every ``anchors=`` line is scaled by the same factor:
    Darknet's anchors are in network-input pixels ([yolo] divides them by the net's w/h), so a
    resized network keeps its anchors' share of the image only if they scale with it.  The file
    is (atomically) rewritten only when its text changes."""
    cfg_path = Path(cfg_path)
    try:
        text = cfg_path.read_text()
    except OSError as e:
        raise CfgError(f"cannot read cfg: {e.strerror}", cfg_path) from None
    old = {}
    for key in ("width", "height"):
        m = re.search(rf"(?m)^[ \t]*{key}[ \t]*=[ \t]*(\d+)[ \t]*(?:[#;].*)?$", text)
        if not m:
            raise CfgError(f"no [net] {key}= to resize", cfg_path)
        old[key] = int(m.group(1))
        text = text[:m.start()] + f"{key}={size}" + text[m.end():]
    if scale_anchors:
        fx, fy = size / old["width"], size / old["height"]

        def scale(m):
            vals = [v for v in re.split(r"[\s,]+", m.group(1).strip()) if v]
            return "anchors=" + ", ".join(f"{max(1, round(float(w) * fx))},{max(1, round(float(h) * fy))}"
                                          for w, h in zip(vals[0::2], vals[1::2]))
        text = re.sub(r"(?m)^[ \t]*anchors[ \t]*=(.*)$", scale, text)
    out = Path(folder) / (name or cfg_path.name)
    if not out.exists() or out.read_text() != text:
        atomic_write(out, text)
    return out
