"""The compiled inference engine (libdkd, csrc/engine/) from Python: :class:`Net`.

The same network as :func:`darknet_kd.model.load` -- the same cfg rules, defaults and error
messages -- run by oneDNN on the CPU (fp32, or bf16 convolutions where the CPU has
AVX512-BF16/AMX) or by cuBLAS on a CUDA device.  ``Net.forward`` returns what the PyTorch
model returns in eval mode; ``Net.detect`` is Darknet's ``detector test`` on one image, the
same detections as ``darknet-kd detect`` (OpenCV-exact resize, decode, threshold, NMS through
darknet_kd's one decoder and one NMS).

    >>> net = Net("cfg/yolov4-tiny.cfg", "yolov4-tiny.weights", bf16=True)
    >>> rows = net.forward(images)          # (B, rows, 5 + classes) float32
    >>> dets = net.detect(rgb_uint8_image)  # [Detection(class_id, prob, (cx, cy, w, h), box), ...]

Bad cfg/weights raise :class:`~darknet_kd.errors.CfgError` / :class:`~darknet_kd.errors.WeightsError`
with the file and line (byte offset), as the PyTorch model does.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CfgError, DarknetKDError, DataError, OpError, WeightsError

__all__ = ["Net", "Detection", "cpu_has_bf16"]

# oneDNN runs on OpenMP, whose spinning workers collapse on cores shared with other processes;
# the runtime libdkd loads reads this once, when darknet_kd._C is first imported (as `dkd` does).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LINE = re.compile(r"^(?P<path>.*?):(?P<line>\d+): (?P<msg>.*)$", re.S)
_BYTE = re.compile(r"^(?P<path>.*?) \(byte (?P<offset>\d+)\): (?P<msg>.*)$", re.S)
_PATH = re.compile(r"^(?P<path>.*?): (?P<msg>cannot read .*)$", re.S)


class Detection(NamedTuple):
    class_id: int
    prob: float
    box: tuple[float, float, float, float]  # cx, cy, w, h relative to the image
    box_index: int                          # the NMS survivor it belongs to


def _C():
    from .ops import _C as load

    return load()


def _error(e) -> DarknetKDError:
    """darknet_kd._C.Error(status, message) -> the project's error with file and line/offset."""
    c = _C()
    status, message = e.args
    cls = {c.ERR_CFG: CfgError, c.ERR_WEIGHTS: WeightsError, c.ERR_IO: DataError}.get(status)
    if cls is None:
        return OpError(message)
    for rx in (_LINE, _BYTE, _PATH):
        m = rx.match(message)
        if m:
            g = m.groupdict()
            return cls(g["msg"], g["path"], line=int(g["line"]) if "line" in g else None,
                       offset=int(g["offset"]) if "offset" in g else None)
    return cls(message)


def cpu_has_bf16() -> bool:
    """True when this CPU runs the engine's bf16 kernels (AVX512-BF16 or AMX)."""
    return bool(_C().cpu_has_bf16())


class Net:
    """A Darknet network compiled by libdkd.  ``width``/``height`` override [net]'s size;
    ``bf16`` asks for bfloat16 convolutions (see :attr:`precision` for what was granted);
    ``threads`` = 0 uses DKD_NUM_THREADS or all cores."""

    def __init__(self, cfg, weights=None, *, width: int = 0, height: int = 0, bf16: bool = False,
                 device: str = "cpu", threads: int = 0):
        c = _C()
        dev = {"cpu": c.DEVICE_CPU, "cuda": c.DEVICE_CUDA}.get(device)
        if dev is None:
            raise OpError(f"device={device!r}: expected 'cpu' or 'cuda'")
        self._h = 0
        try:
            self._h = c.net_load(str(cfg), None if weights is None else str(weights), int(width or 0),
                                 int(height or 0), c.PRECISION_BF16 if bf16 else c.PRECISION_FP32, dev)
            if threads:
                c.net_set_threads(self._h, int(threads))
        except c.Error as e:
            raise _error(e) from None
        self.cfg = str(cfg)
        self.weights = None if weights is None else str(weights)
        d = c.net_describe(self._h)
        self.width, self.height, self.channels = d["width"], d["height"], d["channels"]
        self.classes, self.rows, self.letter_box = d["classes"], d["rows"], d["letter_box"]
        self.precision, self.device = d["precision"], d["device"]
        self.bflops, self.parameters, self.num_layers = d["bflops"], d["parameters"], d["num_layers"]

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        if self._h:
            _C().net_free(self._h)
            self._h = 0

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, name, *args):
        c = _C()
        if not self._h:
            raise OpError("this Net is closed")
        try:
            return getattr(c, name)(self._h, *args)
        except c.Error as e:
            raise _error(e) from None

    # -- info -----------------------------------------------------------------------------
    @property
    def threads(self) -> int:
        return self._call("net_describe")["threads"]

    @threads.setter
    def threads(self, n: int) -> None:
        self._call("net_set_threads", int(n))

    def layer_table(self) -> str:
        """Darknet's layer table and ``Total BFLOPS`` (the same text as ``darknet-kd info``)."""
        return self._call("net_text", _C().NET_TEXT_LAYERS)

    @property
    def warnings(self) -> list[str]:
        """Unused and duplicate cfg fields, partial weights: ``path:line: ...`` lines."""
        return self._call("net_text", _C().NET_TEXT_WARNINGS).splitlines()

    def profile(self) -> str:
        """Per-layer wall time (ms per forward, share of the total, GFLOP/s) of the CPU
        forwards since the last call, as ``dkd bench --profile`` prints it; starts over."""
        return self._call("net_text", _C().NET_TEXT_PROFILE)

    # -- inference ----------------------------------------------------------------------
    def forward(self, x) -> np.ndarray:
        """``x`` (B, C, H, W) float32 RGB in [0, 1] (numpy or a CPU torch tensor) -> decoded
        rows (B, rows, 5 + classes): the PyTorch model's eval-mode output."""
        x = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        want = (self.channels, self.height, self.width)
        if x.ndim != 4 or x.shape[1:] != want:
            raise OpError(f"input shape {tuple(x.shape)}: expected (batch, {', '.join(map(str, want))})")
        out = np.empty((x.shape[0], self.rows, 5 + self.classes), np.float32)
        self._call("net_forward", x.ctypes.data, x.shape[0], out.ctypes.data)
        return out

    def heads(self) -> list[np.ndarray]:
        """After :meth:`forward`: copies of the raw [yolo] inputs (B, A*(5+C), H, W)."""
        out = []
        for i in range(self._call("net_describe")["num_yolo"]):
            ptr, shape = self._call("net_head", i)
            n = int(np.prod(shape))
            buf = (np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * n).from_address(ptr)))
            out.append(buf.reshape(shape).copy())
        return out

    def detect(self, image: np.ndarray, thresh: float = 0.25, nms: float = 0.45,
               letterbox: bool | None = None) -> list[Detection]:
        """Darknet's ``detector test`` on one RGB uint8 image (H, W, 3): detections with
        prob > ``thresh`` after per-class NMS, by prob descending.  ``letterbox`` None uses
        the cfg's [net] letter_box."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise OpError(f"image must be uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
        if img.strides[1:] != (3, 1):
            img = np.ascontiguousarray(img)
        lb = -1 if letterbox is None else int(bool(letterbox))
        found = self._call("net_detect", img.ctypes.data, img.shape[1], img.shape[0], img.strides[0],
                           float(thresh), float(nms), lb)
        return [Detection(int(k), float(p), tuple(float(v) for v in box), int(i)) for k, p, box, i in found]

    def __repr__(self):
        return (f"Net({Path(self.cfg).name!r}, {self.width}x{self.height}x{self.channels}, classes={self.classes}, "
                f"{self.precision}, {self.device})")
