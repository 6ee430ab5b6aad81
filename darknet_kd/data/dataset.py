"""Training and evaluation datasets with Darknet's augmentation (data.c:load_data_detection,
image_opencv.cpp:image_data_augmentation).

Batch format (what :func:`collate` returns, for the YOLO loss and the trainers)::

    images  float32 (B, 3, H, W): RGB, values in [0, 1], H x W = the batch's network size
    targets float32 (M, 6): [batch_index, class, cx, cy, w, h], box centre and size
            relative to the network input (0..1), all objects of the batch
    infos   list of B dicts: path, index, orig_size (w, h) of the image file,
            net_size (w, h) and, for evaluation, letter_box and labels (N, 5) as in the
            label file, i.e. relative to the original image

One training sample (:func:`augment`), as Darknet does it:

1. jitter crop: each side of the crop moves by ``int[-j*ow, j*ow]`` (``j`` = the last
   [yolo] ``jitter``; [yolo] ``resize`` adds Darknet's extra random scale); outside the
   image the crop is filled with the image's mean colour; with [net] ``letter_box=1`` the
   crop is first widened to the network's aspect ratio; resized to the network size with
   INTER_LINEAR.
2. flip (``flip=1``): horizontal, probability 0.5.
3. HSV (``hue``, ``saturation``, ``exposure``): H += 179*U(-hue, hue), S *= rand_scale(sat),
   V *= rand_scale(exp), rand_scale(s) = u or 1/u with u ~ U(1, s), on uint8 HSV.  Darknet
   lets H saturate at 0/255 (OpenCV ``+=`` on uint8); here H wraps around the 180-degree
   circle, which is what a hue shift means.
4. boxes (data.c:correct_boxes + fill_truth_detection): shifted and scaled with the crop,
   flipped, clipped to [0, 1]; boxes narrower than 1/net_w or lower than 1/net_h are
   dropped; at most [yolo] ``max`` boxes are kept (a random subset).

``mosaic=1`` (half of the samples, as Darknet's 50 % of load calls): four images, each
augmented as above to the full network size, are cut at a random point
``cut in [0.2, 0.8]*size``; tile k takes the part of image k nearest to the cut (shifted past
the fill area) -- Darknet's blend_truth_mosaic.  Boxes are clipped to their own tile, as
Darknet with ``mosaic_bound=1``: Darknet's default (0) lets a box overhang into the
neighbouring tile, labelling pixels of another image.  ``mixup=1`` (without mosaic) blends
two augmented images 50/50 and keeps both box sets, in half of the samples.  ``blur`` and
``gaussian_noise`` are not implemented (a warning says so).

Multi-scale ([yolo] ``random``): :class:`DarknetBatchSampler` picks the network size of
each batch with Darknet's rule (detector.c:train_detector): every 10 iterations
``size = round(r*init/step + 1)*step``, r = rand_scale(1.4 or ``random``), the largest size
at the first iteration and in the last 100.  The sampler also draws one seed per sample,
so a sample's augmentation depends only on (seed, epoch, position), never on the number
of worker processes or their timing.

Darknet draws image indices with replacement; here each epoch is a permutation.  Images
are read with OpenCV (BGR) and turned to RGB, as Darknet's load_image_mat_cv does.

Two resize paths, as in Darknet: training (:func:`augment`) follows Darknet's OpenCV data
path (image_opencv.cpp: cv::resize INTER_LINEAR on 8-bit images); evaluation
(:class:`EvalDataset`, used by map, detect, pseudo-label) follows validate_detector_map /
test_detector: load_image's float image, then image.c's own resize_image or letterbox_image
(:func:`resize_image`, :func:`letterbox`), so the network input equals Darknet's to the bit.
"""
from __future__ import annotations

import math
import random
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..errors import CfgError, DataError
from .darknet import DataConfig, label_path, read_labels

# OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the parent
# ran cv2.resize can block forever on the pool's lock (seen here: 1 hang in ~5 loaders).
# As YOLOv5 does, OpenCV runs single-threaded in processes that import the loaders; the
# parallelism is the worker processes.
cv2.setNumThreads(0)
#: multiprocessing start method of the loaders' workers (None: the platform default, fork on Linux)
WORKER_CONTEXT = None

__all__ = ["AugmentOptions", "TrainDataset", "EvalDataset", "DarknetBatchSampler", "collate", "load_image",
           "load_all_labels", "augment", "letterbox", "letterbox_size", "resize_image", "U8_TO_FLOAT",
           "to_original_boxes", "multiscale_size",
           "rand_scale", "train_loader", "eval_loader", "worker_init_fn", "WORKER_CONTEXT"]


# ---------------------------------------------------------------- options

@dataclass
class AugmentOptions:
    """The augmentation settings Darknet reads from [net] and from the last [yolo] layer
    (detector.c:train_detector copies jitter, resize, max and random from it)."""

    jitter: float = 0.0
    resize: float = 1.0
    flip: bool = False
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    mosaic: bool = False
    mixup: bool = False
    letter_box: bool = False
    max_boxes: int = 200
    random: float = 0.0
    resize_step: int = 32

    @classmethod
    def from_cfg(cls, net, yolo=None) -> "AugmentOptions":
        """From a model's ``net`` (NetOptions) and its last [yolo] layer (``model.yolo_layers[-1]``)."""
        if getattr(net, "blur", 0) or getattr(net, "gaussian_noise", 0):
            warnings.warn("[net] blur / gaussian_noise are not implemented by the loader and are ignored")
        o = cls(flip=bool(net.flip), hue=net.hue, saturation=net.saturation, exposure=net.exposure,
                mosaic=bool(net.mosaic), mixup=net.mixup == 1 and not net.mosaic, letter_box=bool(net.letter_box),
                resize_step=int(getattr(net, "resize_step", 32)))
        if yolo is not None:
            o.jitter, o.resize, o.max_boxes, o.random = yolo.jitter, yolo.resize, yolo.max_boxes, yolo.random
        if o.mosaic and o.letter_box:
            raise CfgError("[net] letter_box=1 and mosaic=1 cannot be combined (Darknet refuses it too)")
        return o

    @classmethod
    def from_model(cls, model) -> "AugmentOptions":
        return cls.from_cfg(model.net, model.yolo_layers[-1] if model.yolo_layers else None)


def rand_scale(rng: np.random.Generator, s: float) -> float:
    """utils.c:rand_scale: u ~ U(1, s), returned as u or 1/u with equal chance."""
    lo, hi = sorted((1.0, float(s)))
    u = rng.uniform(lo, hi)
    return u if rng.integers(2) else 1.0 / u


# ---------------------------------------------------------------- images and labels

def load_image(path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), or a DataError naming the file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError("cannot read the image (missing, not an image, or corrupt)", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_all_labels(images, num_classes: int, desc: str = "labels") -> list[np.ndarray]:
    """Read and validate every label file of ``images`` once (errors name file:line), so
    a bad label stops the run before training, not inside a worker process."""
    return [read_labels(label_path(p), num_classes)
            for p in tqdm(images, desc=desc, unit="file", leave=False, disable=len(images) < 2000)]


def letterbox_size(ow: int, oh: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Darknet's image.c:letterbox_image geometry: (new_w, new_h, dx, dy), integer fit.
    The aspect test is Darknet's float32 ``(float)w / ow < (float)h / oh`` (as
    yolo_layer.c:correct_yolo_boxes and the yolo_decode op), not a double one."""
    if np.float32(w) / np.float32(ow) < np.float32(h) / np.float32(oh):
        new_w, new_h = w, (oh * w) // ow
    else:
        new_w, new_h = (ow * h) // oh, h
    return new_w, new_h, (w - new_w) // 2, (h - new_h) // 2


#: Darknet's load_image byte -> float, ``(float)v / 255.`` (image.c:load_image_stb, the
#: OPENCV=0 build; an OPENCV=1 build compiled -Ofast multiplies by (float)(1/255) instead,
#: 126 of the 256 values 1 ulp apart).  float32 division gives the same 256 values (tested).
U8_TO_FLOAT = (np.arange(256) / 255.0).astype(np.float32)


def _to_float(a: np.ndarray, out=None) -> np.ndarray:
    """uint8 -> :data:`U8_TO_FLOAT` values (one vectorised division); other dtypes -> float32."""
    if a.dtype == np.uint8:
        return np.divide(a, np.float32(255), out=out, dtype=np.float32)
    if out is None:
        return a.astype(np.float32)
    np.copyto(out, a)
    return out


def _resize_taps(src: int, dst: int):
    """resize_image's sample positions along one axis: ``s = k * ((float)(src-1) / (dst-1))``
    in float32, ``i = (int)s``, ``d = s - i`` for k = 0..dst-1.  ``dst == 1`` makes Darknet
    divide by zero (then an undefined float->int cast); here it samples the last pixel, as
    Darknet does for the last output column."""
    if dst == 1:
        return np.array([src - 1]), np.zeros(1, np.float32)
    s = np.arange(dst, dtype=np.float32) * (np.float32(src - 1) / np.float32(dst - 1))
    i = s.astype(np.int64)
    return np.minimum(i, src - 1), s - i.astype(np.float32)


class _Scratch(threading.local):
    """Per-thread temporaries of :func:`resize_image`, reused from image to image: glibc hands
    blocks over 128 KiB back to the OS when freed, and page-faulting fresh ones for every image
    made the resize 3-5x slower (measured; MALLOC_TRIM_THRESHOLD_ removed the difference)."""

    def get(self, name: str, shape, dtype) -> np.ndarray:
        n, key = math.prod(shape), f"{name}_{np.dtype(dtype).str}"
        buf = getattr(self, key, None)
        if buf is None or buf.size < n:
            buf = np.empty(n, dtype)
            setattr(self, key, buf)
        return buf[:n].reshape(shape)


_SCRATCH = _Scratch()


def resize_image(img: np.ndarray, w: int, h: int, out: np.ndarray | None = None,
                 block_bytes: int = 1 << 18) -> np.ndarray:
    """Darknet's image.c:resize_image (its bilinear, used by ``detector map``/``test`` through
    load_data IMAGE_DATA, and by letterbox_image): an (H, W, C) image -> float32 (C, h, w),
    Darknet's planar layout (written into ``out`` when given, e.g. a view of a canvas).

    ``img`` uint8 (bytes become :data:`U8_TO_FLOAT`, as in Darknet's load_image) or float.
    The same float32 operations in the same order as Darknet's loops, so the result is equal
    to the bit: a horizontal pass ``(1-dx)*p[ix] + dx*p[ix+1]`` with the last column copied,
    then a vertical pass ``(1-dy)*q[iy] + dy*q[iy+1]`` whose last output row keeps only its
    first term -- with float32 positions that term is sometimes ``(1-dy)*q[oh-2]``, dy ~ 1:
    a black last row, as in Darknet (e.g. 8 -> 288 rows).  The output is made in blocks of
    rows (``block_bytes`` of float32 each, so the temporaries stay in cache), and only the
    source rows a block reads go through the horizontal pass; neither changes a value."""
    oh, ow, ch = img.shape
    if out is None:
        out = np.empty((ch, h, w), np.float32)
    if (ow, oh) == (w, h):
        return _to_float(img.transpose(2, 0, 1), out)
    ix, dx = _resize_taps(ow, w)
    ix[-1], dx[-1] = ow - 1, 0  # c == w-1 (or im.w == 1): the last column, copied
    ix1 = np.minimum(ix + 1, ow - 1)
    iy, dy = _resize_taps(oh, h)
    wy0, wy1 = (1 - dy)[:, None], dy[:, None]
    two_rows = oh > 1 and h > 1  # rows 0..h-2 add dy * q[iy+1]; none when im.h == 1
    step = max(1, block_bytes // (w * ch * 4))
    S = _SCRATCH
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        ra = min(r1, h - 1) if two_rows else r0  # rows r0..ra-1 get the second term
        rows = np.unique(np.concatenate([iy[r0:r1], iy[r0:ra] + 1]))
        n = len(rows)
        hwc = np.take(img, rows, axis=0, out=S.get("hwc", (n, ow, ch), img.dtype), mode="clip")
        src = S.get("src", (ch, n, ow), img.dtype)
        np.copyto(src, hwc.transpose(2, 0, 1))
        # horizontal pass: q = (1-dx) * p[ix] + dx * p[ix+1]
        q, q1 = S.get("q", (ch, n, w), np.float32), S.get("q1", (ch, n, w), np.float32)
        _to_float(np.take(src, ix, axis=2, out=S.get("g", (ch, n, w), img.dtype), mode="clip"), q)
        q *= 1 - dx
        _to_float(np.take(src, ix1, axis=2, out=S.get("g", (ch, n, w), img.dtype), mode="clip"), q1)
        q1 *= dx
        q += q1
        # vertical pass: (1-dy) * q[iy], then + dy * q[iy+1] except on the last row
        pos = np.searchsorted(rows, iy[r0:r1])
        o = out[:, r0:r1]
        np.multiply(np.take(q, pos, axis=1, out=S.get("t", (ch, r1 - r0, w), np.float32), mode="clip"),
                    wy0[r0:r1], out=o)
        if ra > r0:
            t = np.take(q, pos[:ra - r0] + 1, axis=1, out=S.get("t", (ch, ra - r0, w), np.float32), mode="clip")
            t *= wy1[r0:ra]
            o[:, :ra - r0] += t
    return out


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's image.c:letterbox_image: an (H, W, C) image -> float32 (C, h, w),
    :func:`resize_image` to the integer fit of :func:`letterbox_size`, centred on a 0.5 grey
    canvas (nothing is drawn when the fit has a zero side)."""
    new_w, new_h, dx, dy = letterbox_size(img.shape[1], img.shape[0], w, h)
    out = np.full((img.shape[2], h, w), 0.5, np.float32)
    if new_w > 0 and new_h > 0:
        resize_image(img, new_w, new_h, out=out[:, dy:dy + new_h, dx:dx + new_w])
    return out


def to_original_boxes(boxes, orig_w: int, orig_h: int, net_w: int, net_h: int, letter_box: bool):
    """Map [..., cx, cy, w, h] relative to the network input back to relative to the
    original image (yolo_layer.c:correct_yolo_boxes); a plain resize changes nothing.
    Works on numpy arrays and torch tensors; the last dimension holds the 4 values."""
    if not letter_box:
        return boxes
    new_w, new_h, _, _ = letterbox_size(orig_w, orig_h, net_w, net_h)
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] - (net_w - new_w) / 2.0 / net_w) / (new_w / net_w)
    out[..., 1] = (out[..., 1] - (net_h - new_h) / 2.0 / net_h) / (new_h / net_h)
    out[..., 2] = out[..., 2] * net_w / new_w
    out[..., 3] = out[..., 3] * net_h / new_h
    return out


def _net_boxes_from_labels(labels: np.ndarray, ow, oh, w, h, letter_box: bool) -> np.ndarray:
    """Labels relative to the original image -> relative to the (letterboxed) network input."""
    out = labels.astype(np.float32).copy()
    if letter_box and len(out):
        new_w, new_h, _, _ = letterbox_size(ow, oh, w, h)
        out[:, 1] = out[:, 1] * new_w / w + (w - new_w) / 2.0 / w
        out[:, 2] = out[:, 2] * new_h / h + (h - new_h) / 2.0 / h
        out[:, 3] *= new_w / w
        out[:, 4] *= new_h / h
    return out


# ---------------------------------------------------------------- one augmented image

def _crop_params(ow, oh, w, h, o: AugmentOptions, rng, mosaic_tile=None):
    """Random crop offsets and flip of one image (load_data_detection, OpenCV branch)."""
    dw, dh = int(ow * o.jitter), int(oh * o.jitter)
    r1, r2, r3, r4 = rng.random(4)
    rr1, rr2 = rng.random(2)
    flip = bool(o.flip and rng.integers(2))
    pick = lambda lo, hi, r: int(r * (max(lo, hi) - min(lo, hi)) + min(lo, hi))  # rand_precalc_random
    pleft, pright, ptop, pbot = pick(-dw, dw, r1), pick(-dw, dw, r2), pick(-dh, dh, r3), pick(-dh, dh, r4)
    if o.resize != 1.0:
        down = o.resize if o.resize <= 1.0 else 1.0 / o.resize
        up = o.resize if o.resize >= 1.0 else 1.0 / o.resize
        min_rdw, min_rdh = int(ow * (1 - 1 / down) / 2), int(oh * (1 - 1 / down) / 2)
        max_rdw, max_rdh = int(ow * (1 - 1 / up) / 2), int(oh * (1 - 1 / up) / 2)
        if o.resize < 1:
            max_rdw = max_rdh = 0
        pleft += pick(min_rdw, max_rdw, rr1)
        pright += pick(min_rdw, max_rdw, rr2)
        ptop += pick(min_rdh, max_rdh, rr1)
        pbot += pick(min_rdh, max_rdh, rr2)
    if o.letter_box:
        net_ar = w / h
        if (ow / oh) / net_ar > 1:
            delta = (ow / net_ar - oh) / 2
            ptop, pbot = int(ptop - delta), int(pbot - delta)
        else:
            delta = (oh * net_ar - ow) / 2
            pleft, pright = int(pleft - delta), int(pright - delta)
    if mosaic_tile is not None and rng.integers(2):
        # "move each 2nd image to the corner - so that most of it was visible"
        k = mosaic_tile
        right_side, bottom = k in (1, 3), k in (2, 3)
        if right_side != flip:
            pleft, pright = pleft + pright, 0
        else:
            pright, pleft = pleft + pright, 0
        if bottom:
            ptop, pbot = ptop + pbot, 0
        else:
            pbot, ptop = ptop + pbot, 0
    swidth, sheight = ow - pleft - pright, oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:  # Darknet: "invalid resize", reset
        swidth, sheight, pleft, ptop, pright, pbot = ow, oh, 0, 0, 0, 0
    return pleft, ptop, swidth, sheight, pright, pbot, flip


def _hsv(img: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """Darknet's HSV jitter on uint8 RGB through one per-channel lookup table."""
    if dsat == 1 and dexp == 1 and dhue == 0:
        return img
    v = np.arange(256, dtype=np.float64)
    lut = np.stack([(np.arange(256) + int(round(179 * dhue))) % 180,  # H wraps on OpenCV's 0..180 circle
                    np.clip(np.rint(v * dsat), 0, 255), np.clip(np.rint(v * dexp), 0, 255)], 1)
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), lut.astype(np.uint8).reshape(1, 256, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _filter_boxes(b: np.ndarray, w: int, h: int) -> np.ndarray:
    """fill_truth_detection: drop boxes below one network pixel and centres outside (0, 1]."""
    keep = (b[:, 3] >= 1.0 / w) & (b[:, 4] >= 1.0 / h) & (b[:, 1] > 0) & (b[:, 1] <= 1) & (b[:, 2] > 0) & (b[:, 2] <= 1)
    return b[keep]


def augment(img: np.ndarray, labels: np.ndarray, w: int, h: int, o: AugmentOptions, rng: np.random.Generator,
            mosaic_tile: int | None = None):
    """One image through Darknet's crop/resize/flip/HSV (see the module docstring).

    ``img`` RGB uint8, ``labels`` (N, 5) [cls, cx, cy, w, h] relative to ``img``.  Returns
    (image (h, w, 3) uint8, boxes (K, 5) relative to the output, crop) where crop =
    (pleft, ptop, pright, pbot, flip) in original pixels (used by mosaic)."""
    oh, ow = img.shape[:2]
    pleft, ptop, swidth, sheight, pright, pbot, flip = _crop_params(ow, oh, w, h, o, rng, mosaic_tile)
    dhue = rng.uniform(-o.hue, o.hue) if o.hue else 0.0
    dsat = rand_scale(rng, o.saturation)
    dexp = rand_scale(rng, o.exposure)

    if pleft == 0 and ptop == 0 and swidth == ow and sheight == oh:
        sized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        mean = np.rint(cv2.mean(img)[: img.shape[2]]).astype(np.uint8)  # cv::mean, as Darknet fills
        cropped = np.empty((sheight, swidth, img.shape[2]), np.uint8)
        cropped[:] = mean
        x0, y0 = max(0, pleft), max(0, ptop)
        x1, y1 = min(ow, pleft + swidth), min(oh, ptop + sheight)
        if x1 > x0 and y1 > y0:
            cropped[y0 - ptop:y1 - ptop, x0 - pleft:x1 - pleft] = img[y0:y1, x0:x1]
        sized = cv2.resize(cropped, (w, h), interpolation=cv2.INTER_LINEAR)
    if flip:
        sized = cv2.flip(sized, 1)
    sized = _hsv(sized, dhue, dsat, dexp)

    b = labels.astype(np.float64)
    if len(b):
        left = ((b[:, 1] - b[:, 3] / 2) * ow - pleft) / swidth
        right = ((b[:, 1] + b[:, 3] / 2) * ow - pleft) / swidth
        top = ((b[:, 2] - b[:, 4] / 2) * oh - ptop) / sheight
        bot = ((b[:, 2] + b[:, 4] / 2) * oh - ptop) / sheight
        if flip:
            left, right = 1.0 - right, 1.0 - left
        left, right, top, bot = (np.clip(v, 0.0, 1.0) for v in (left, right, top, bot))
        b = np.stack([b[:, 0], (left + right) / 2, (top + bot) / 2, right - left, bot - top], 1)
        b = _filter_boxes(b, w, h)
    return sized, b.astype(np.float32).reshape(-1, 5), (pleft, ptop, pright, pbot, flip)


def _mosaic(samples, w: int, h: int, o: AugmentOptions, rng):
    """Four (img, labels) -> one mosaic image and boxes (data.c, use_mixup == 3)."""
    cut_x = int(rng.integers(int(w * 0.2), int(w * 0.8) + 1))
    cut_y = int(rng.integers(int(h * 0.2), int(h * 0.8) + 1))
    out = np.empty((h, w, 3), np.uint8)
    boxes = []
    for k, (img, labels) in enumerate(samples):
        oh, ow = img.shape[:2]
        ai, b, (pleft, ptop, pright, pbot, flip) = augment(img, labels, w, h, o, rng, mosaic_tile=k)
        if flip:
            pleft, pright = pright, pleft
        left_shift = min(cut_x, max(0, int(-pleft * w / ow)))
        top_shift = min(cut_y, max(0, int(-ptop * h / oh)))
        right_shift = min(w - cut_x, max(0, int(-pright * w / ow)))
        bot_shift = min(h - cut_y, max(0, int(-pbot * h / oh)))
        right_side, bottom = k in (1, 3), k in (2, 3)
        dx0, dx1 = (cut_x, w) if right_side else (0, cut_x)
        dy0, dy1 = (cut_y, h) if bottom else (0, cut_y)
        sx0 = left_shift if right_side else w - cut_x - right_shift
        sy0 = top_shift if bottom else h - cut_y - bot_shift
        out[dy0:dy1, dx0:dx1] = ai[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
        if len(b):
            x1 = np.clip((b[:, 1] - b[:, 3] / 2) * w + dx0 - sx0, dx0, dx1)
            x2 = np.clip((b[:, 1] + b[:, 3] / 2) * w + dx0 - sx0, dx0, dx1)
            y1 = np.clip((b[:, 2] - b[:, 4] / 2) * h + dy0 - sy0, dy0, dy1)
            y2 = np.clip((b[:, 2] + b[:, 4] / 2) * h + dy0 - sy0, dy0, dy1)
            nb = np.stack([b[:, 0], (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], 1)
            boxes.append(_filter_boxes(nb, w, h))
    b = np.concatenate(boxes) if boxes else np.zeros((0, 5))
    return out, b.astype(np.float32).reshape(-1, 5)


# ---------------------------------------------------------------- datasets

class TrainDataset(Dataset):
    """Darknet-style augmented samples.  Index with an int (network size = the default
    ``width`` x ``height``, seed from ``seed`` and the index) or with the
    ``(index, w, h, seed)`` tuples that :class:`DarknetBatchSampler` yields.

    A sample is (image uint8 tensor (3, h, w) RGB, boxes float32 (K, 5) [cls, cx, cy, w, h]
    relative to the network input, info dict)."""

    def __init__(self, images, num_classes: int, width: int, height: int, options: AugmentOptions,
                 labels: list | None = None, seed: int = 0):
        self.images = [Path(p) for p in images]
        if not self.images:
            raise DataError("the training list has no images")
        self.num_classes = num_classes
        self.width, self.height = width, height
        self.options = options
        self.labels = labels if labels is not None else load_all_labels(self.images, num_classes)
        if len(self.labels) != len(self.images):
            raise ValueError("labels must be parallel to images")
        self.seed = seed

    def __len__(self):
        return len(self.images)

    def _load(self, i):
        return load_image(self.images[i]), self.labels[i]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            i, w, h, seed = key
        else:
            i, w, h, seed = key, self.width, self.height, (self.seed, key)
        rng = np.random.default_rng(seed)
        o = self.options
        img, labels = self._load(i)
        orig = (img.shape[1], img.shape[0])
        if o.mosaic and rng.integers(2):
            others = rng.integers(0, len(self), 3)
            out, boxes = _mosaic([(img, labels)] + [self._load(j) for j in others], w, h, o, rng)
        elif o.mixup and rng.integers(2):
            a, ba, _ = augment(img, labels, w, h, o, rng)
            img2, labels2 = self._load(int(rng.integers(0, len(self))))
            b, bb, _ = augment(img2, labels2, w, h, o, rng)
            out = cv2.addWeighted(a, 0.5, b, 0.5, 0)
            boxes = np.concatenate([ba, bb])
        else:
            out, boxes, _ = augment(img, labels, w, h, o, rng)
        if len(boxes) > o.max_boxes:  # fill_truth_detection keeps `max` boxes after a shuffle
            boxes = boxes[np.sort(rng.permutation(len(boxes))[: o.max_boxes])]
        info = {"path": str(self.images[i]), "index": int(i), "orig_size": orig, "net_size": (w, h)}
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), torch.from_numpy(boxes), info


class EvalDataset(Dataset):
    """Images without augmentation, exactly as Darknet's ``detector map`` (detector.c:
    validate_detector_map -> data.c:load_data IMAGE_DATA / LETTERBOX_DATA) and ``detector
    test`` prepare them: load_image's float image in [0, 1], then :func:`resize_image`
    (stretch) or :func:`letterbox` (``letter_box=True``, 0.5 padding) to ``width`` x
    ``height``; the network input equals Darknet's to the bit (PNG/BMP; JPEG pixels are
    cv2.imread's, i.e. a Darknet built with OPENCV=1 -- stb_image, used by OPENCV=0, decodes
    JPEG slightly differently).  Samples are float32 CHW.  The info dict carries
    ``orig_size`` and ``labels`` relative to the original image; boxes predicted relative to
    the network input go back with :func:`to_original_boxes`.  (Training, :func:`augment`,
    resizes with OpenCV as Darknet's OpenCV data path, image_opencv.cpp, does.)"""

    def __init__(self, images, num_classes: int, width: int, height: int, letter_box: bool = False,
                 labels: list | None = None):
        self.images = [Path(p) for p in images]
        self.num_classes = num_classes
        self.width, self.height, self.letter_box = width, height, bool(letter_box)
        self.labels = labels if labels is not None else load_all_labels(self.images, num_classes)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if isinstance(i, tuple):
            i = i[0]
        img = load_image(self.images[i])
        oh, ow = img.shape[:2]
        w, h = self.width, self.height
        out = letterbox(img, w, h) if self.letter_box else resize_image(img, w, h)
        labels = self.labels[i]
        boxes = _net_boxes_from_labels(labels, ow, oh, w, h, self.letter_box)
        info = {"path": str(self.images[i]), "index": int(i), "orig_size": (ow, oh), "net_size": (w, h),
                "letter_box": self.letter_box, "labels": labels}
        return torch.from_numpy(out), torch.from_numpy(boxes), info


def collate(batch):
    """Samples -> (images float32 (B,3,H,W) in [0,1], targets (M, 6), infos); see the module
    docstring.  uint8 samples (training) are divided by 255, float samples (evaluation) kept."""
    images = torch.stack([b[0] for b in batch])
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    targets = [torch.cat([torch.full((len(b[1]), 1), float(k)), b[1].float()], 1) for k, b in enumerate(batch)]
    return images, torch.cat(targets) if targets else torch.zeros((0, 6)), [b[2] for b in batch]


# ---------------------------------------------------------------- sampling and multi-scale

def multiscale_size(rng, init_w: int, init_h: int, coef: float, step: int, largest: bool = False):
    """detector.c:train_detector's network size for the next 10 iterations."""
    coef = 1.4 if coef == 1.0 else coef
    r = rand_scale(rng, coef)
    dim_w = int(round(r * init_w / step + 1)) * step
    dim_h = int(round(r * init_h / step + 1)) * step
    if r < 1 and (dim_w > init_w or dim_h > init_h):
        dim_w, dim_h = init_w, init_h
    if largest:
        dim_w = int(round(coef * init_w / step + 1)) * step
        dim_h = int(round(coef * init_h / step + 1)) * step
    return max(dim_w, step), max(dim_h, step)


class DarknetBatchSampler(Sampler):
    """Yields batches of ``(index, w, h, seed)``: a shuffled epoch (``shuffle``), the
    batch's network size (multi-scale when ``random`` > 0, else ``width`` x ``height``)
    and one seed per sample.  ``iteration`` counts batches across epochs (set it when
    resuming); ``max_batches`` enables Darknet's "largest size in the last 100"."""

    def __init__(self, n: int, batch_size: int, width: int, height: int, random: float = 0.0, step: int = 32,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True, max_batches: int = 0,
                 iteration: int = 0):
        if n < 1 or batch_size < 1:
            raise ValueError("need at least one image and a positive batch size")
        self.n, self.batch_size, self.width, self.height = n, batch_size, width, height
        self.random, self.step, self.seed, self.shuffle = random, step, seed, shuffle
        self.drop_last = drop_last and n >= batch_size
        self.max_batches, self.iteration = max_batches, iteration
        # Resuming at batch `iteration`: continue that epoch's permutation where it stopped.
        self.epoch, self._skip = divmod(iteration, len(self)) if len(self) else (0, 0)
        self.size = (width, height)

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def _size_for(self, it: int, first: bool):
        if not self.random:
            return self.width, self.height
        if first or it % 10 == 0:
            rng = np.random.default_rng((self.seed, 1, it))
            last = self.max_batches and it > self.max_batches - 100
            self.size = multiscale_size(rng, self.width, self.height, self.random, self.step, first or bool(last))
        return self.size

    def __iter__(self):
        rng = np.random.default_rng((self.seed, 0, self.epoch))
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**63 - 1, self.n)
        first = self.epoch == 0 and self._skip == 0
        self.epoch += 1
        skip, self._skip = self._skip, 0
        if skip and self.random:  # the multi-scale size in force at the resume point
            k = self.iteration - self.iteration % 10
            self._size_for(k, k == 0)
        for b in range(skip, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            w, h = self._size_for(self.iteration, first and b == 0)
            self.iteration += 1
            yield [(int(i), w, h, int(seeds[i])) for i in idx]


def worker_init_fn(worker_id: int):
    """Per-worker setup: one OpenCV/torch thread (the samples are the parallel unit) and
    seeds derived from torch's per-worker seed, so any other randomness is reproducible."""
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def train_loader(data: DataConfig, model, batch_size: int, workers: int = 2, seed: int = 0,
                 key: str = "train", iteration: int = 0) -> DataLoader:
    """The training DataLoader of a .data file for a Darknet model (its [net] and last [yolo])."""
    opts = AugmentOptions.from_model(model)
    images = data.images(key)
    if model.num_classes != data.classes:
        raise DataError(f"classes={data.classes} but the model's [yolo] layers have classes={model.num_classes}",
                        data.path)
    ds = TrainDataset(images, data.classes, model.net.width, model.net.height, opts, seed=seed)
    sampler = DarknetBatchSampler(len(ds), batch_size, model.net.width, model.net.height, opts.random,
                                  opts.resize_step, seed, max_batches=model.net.max_batches, iteration=iteration)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      worker_init_fn=worker_init_fn, persistent_workers=workers > 0,
                      multiprocessing_context=WORKER_CONTEXT if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def eval_loader(data: DataConfig, model, batch_size: int = 8, workers: int = 2, key: str = "valid") -> DataLoader:
    """The evaluation DataLoader (no augmentation, [net] letter_box decides letterbox/stretch)."""
    ds = EvalDataset(data.images(key), data.classes, model.net.width, model.net.height, bool(model.net.letter_box))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers,
                      worker_init_fn=worker_init_fn, multiprocessing_context=WORKER_CONTEXT if workers > 0 else None)
