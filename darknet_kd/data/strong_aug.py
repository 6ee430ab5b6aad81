"""The student's strong view of mean-teacher / LPLD adaptation, and the weak/strong pair dataset.

LPLD (ECCV 2024, its code: detectron2/data/detection_utils.py:build_strong_augmentation, the
Unbiased-Teacher recipe) trains the student on a strongly augmented copy of the image the
teacher sees.  All of its strong operations are *photometric* or erase pixels in place, so
the geometry of the two views is identical and every teacher box is valid on the student's
image unchanged.  In order:

1. colour jitter (brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1) with probability 0.8,
   the four operations in a random order as torchvision's ColorJitter: brightness multiplies
   by b ~ U(0.6, 1.4); contrast blends with the mean grey level, c ~ U(0.6, 1.4); saturation
   blends with the grey image, s ~ U(0.6, 1.4); hue rotates H by h ~ U(−0.1, 0.1) of the circle;
2. grayscale (ITU-R 601 luma, replicated to 3 channels) with probability 0.2;
3. Gaussian blur, σ ~ U(0.1, 2.0) pixels, with probability 0.5;
4. three random erasings (torchvision RandomErasing) with probability 0.7 / 0.5 / 0.3,
   area fraction (0.05, 0.2) / (0.02, 0.2) / (0.02, 0.2), aspect ratio (0.3, 3.3) / (0.1, 6) /
   (0.05, 8), log-uniform; up to 10 tries for a rectangle that fits.  The erased pixels are
   random noise: torchvision's ``value="random"`` draws N(0, 1) in [0, 1] units (which
   ToPILImage then wraps around in uint8); here they are uniform uint8 noise.

The weak view is Darknet's own training augmentation (:mod:`darknet_kd.data.dataset`: crop
jitter, flip, HSV, mosaic as the cfg says); :class:`PairDataset` derives the strong view
from the weak one, so the two share every geometric transform.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .dataset import TrainDataset

__all__ = ["StrongAugment", "PairDataset", "erase_box"]

#: (probability, area fraction range, aspect ratio range) of the three erasings
ERASINGS = ((0.7, (0.05, 0.2), (0.3, 3.3)), (0.5, (0.02, 0.2), (0.1, 6.0)), (0.3, (0.02, 0.2), (0.05, 8.0)))


def _gray(img: np.ndarray) -> np.ndarray:
    """(H, W) float32 ITU-R 601 luma of an RGB float image (torchvision rgb_to_grayscale)."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _hue_shift(img: np.ndarray, h: float) -> np.ndarray:
    """Rotate the hue of an RGB float image in [0, 255] by ``h`` of the colour circle."""
    hsv = cv2.cvtColor(img / 255.0, cv2.COLOR_RGB2HSV)  # float: H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * h, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0


def erase_box(h: int, w: int, rng: np.random.Generator, scale, ratio, tries: int = 10):
    """torchvision RandomErasing.get_params: (top, left, eh, ew) of a rectangle covering a
    ``scale`` fraction of the image with a log-uniform aspect ``ratio``, or None when 10
    tries do not fit."""
    area = h * w
    lo, hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(tries):
        a = area * rng.uniform(*scale)
        r = float(np.exp(rng.uniform(lo, hi)))
        eh, ew = int(round(np.sqrt(a * r))), int(round(np.sqrt(a / r)))
        if 0 < eh < h and 0 < ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


@dataclass
class StrongAugment:
    """LPLD's strong augmentation of an RGB uint8 (H, W, 3) image (see the module docstring).
    Every probability can be set to 0 (tests, ablations)."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple = (0.1, 2.0)
    erasings: tuple = ERASINGS

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        out = img.astype(np.float32)
        if rng.random() < self.jitter_p:
            out = self.color_jitter(out, rng)
        if rng.random() < self.gray_p:
            out = np.repeat(_gray(out)[..., None], 3, axis=2)
        if rng.random() < self.blur_p:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(*self.blur_sigma)))
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        h, w = out.shape[:2]
        for p, scale, ratio in self.erasings:
            if rng.random() < p:
                box = erase_box(h, w, rng, scale, ratio)
                if box is not None:
                    t, l, eh, ew = box
                    out[t:t + eh, l:l + ew] = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
        return out

    def color_jitter(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """torchvision ColorJitter on a float RGB image in [0, 255] (clamped after each step)."""
        for op in rng.permutation(4):
            if op == 0 and self.brightness:
                img = img * rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast:
                c = rng.uniform(1 - self.contrast, 1 + self.contrast)
                img = img * c + float(_gray(img).mean()) * (1 - c)
            elif op == 2 and self.saturation:
                s = rng.uniform(1 - self.saturation, 1 + self.saturation)
                img = img * s + _gray(img)[..., None] * (1 - s)
            elif op == 3 and self.hue:
                img = _hue_shift(img, rng.uniform(-self.hue, self.hue))
            img = np.clip(img, 0, 255)
        return img


class PairDataset(TrainDataset):
    """Weak/strong pairs of unlabelled images: a sample is (uint8 tensor (6, h, w) — channels
    0-2 the weak view (Darknet's augmentation), 3-5 the strong view of the same pixels —,
    boxes (K, 5) of ``labels`` under the weak geometry, info).  Adaptation passes empty
    labels: the target's labels are never read.  :func:`darknet_kd.data.dataset.collate`
    batches them into float32 (B, 6, H, W)."""

    def __init__(self, *args, strong: StrongAugment | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.strong = strong or StrongAugment()

    def __getitem__(self, key):
        weak, boxes, info = super().__getitem__(key)
        seed = key[3] if isinstance(key, tuple) else (self.seed, key)
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x5EED])
        strong = self.strong(np.ascontiguousarray(weak.numpy().transpose(1, 2, 0)), rng)
        pair = torch.cat([weak, torch.from_numpy(np.ascontiguousarray(strong.transpose(2, 0, 1)))], 0)
        return pair, boxes, info

