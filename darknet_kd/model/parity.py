"""Output parity with OpenCV's Darknet importer (cv2.dnn.readNetFromDarknet, OpenCV 4.x).

OpenCV reports each [yolo] layer as rows in (row, col, anchor) order with class columns
= objectness x class probability, zeroed below its threshold (0.2); ours are in
(anchor, row, col) order with raw class probabilities.  :func:`opencv_max_abs_diff`
maps ours to OpenCV's layout and compares every value OpenCV reports; where OpenCV has
zeroed a class score, ours must lie at or below its threshold.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..cfg import sized_cfg
from .darknet import Darknet
from .weights import randomize

OPENCV_CLASS_THRESH = 0.2


def opencv_outputs(cfg_path, weights_path, x: np.ndarray) -> list[np.ndarray]:
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return list(net.forward(net.getUnconnectedOutLayersNames()))


def to_opencv_layout(decoded: np.ndarray, model: Darknet, x_shape) -> list[np.ndarray]:
    """(N, 5+C) rows of one image -> per [yolo] layer (H*W*A, 5+C) in OpenCV's order."""
    out, off = [], 0
    in_h, in_w = x_shape[-2:]
    for y in model.yolo_layers:
        stride_h = model.net.height // y.in_shape.h
        stride_w = model.net.width // y.in_shape.w
        a, h, w = len(y.mask), in_h // stride_h, in_w // stride_w
        n = a * h * w
        blk = decoded[off:off + n].reshape(a, h, w, -1).transpose(1, 2, 0, 3).reshape(n, -1).copy()
        blk[:, 5:] *= blk[:, 4:5]
        out.append(blk)
        off += n
    return out


def compare_with_opencv(model: Darknet, cfg_path, weights_path, x: np.ndarray) -> float:
    """Max abs difference between our decoded outputs and OpenCV's, batch of images."""
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(x)).numpy()
    worst = 0.0
    for b in range(x.shape[0]):
        theirs = opencv_outputs(cfg_path, weights_path, x[b:b + 1])
        mine = to_opencv_layout(ours[b], model, x.shape)
        if [t.shape for t in theirs] != [m.shape for m in mine]:
            raise AssertionError(f"layouts differ: OpenCV {[t.shape for t in theirs]}, ours {[m.shape for m in mine]}")
        for m, t in zip(mine, theirs):
            reported = t[:, 5:] > 0
            worst = max(worst, float(np.abs(m[:, :5] - t[:, :5]).max()),
                        float(np.abs(np.where(reported, m[:, 5:] - t[:, 5:], 0)).max()),
                        float(np.where(reported, 0, m[:, 5:] - OPENCV_CLASS_THRESH).max(initial=0.0)))
    return worst


def random_parity(cfg_path, size: int | None = None, seed: int = 0, batch: int = 1) -> float:
    """Seeded random weights for ``cfg_path`` at input ``size``: max abs diff vs OpenCV DNN."""
    cfg_path = Path(cfg_path)
    model = Darknet.from_cfg(cfg_path, size, size).eval()
    randomize(model, seed)
    with tempfile.TemporaryDirectory() as d:
        cfg = sized_cfg(cfg_path, size, d) if size else cfg_path
        w = Path(d) / "random.weights"
        model.save_weights(w)
        x = np.random.RandomState(seed).rand(batch, model.net.channels, model.net.height,
                                             model.net.width).astype(np.float32)
        return compare_with_opencv(model, cfg, w, x)
