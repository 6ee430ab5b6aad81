"""Online crops around labelled objects (joliGEN's unaligned_labeled_mask_online dataset).

Per sample (facts: joligen.md section 6): one box of the image is picked uniformly; the crop
side is s ~ U_int[max(w_box, h_box, crop - delta), crop + delta] (the box side when the box
is larger than crop + delta); the crop corner is uniform among the positions that keep the
box inside the crop and the crop inside the image (when the crop is larger than the image,
among those that keep the image inside the crop; the rest is zero padding).  The crop is
resized to ``crop`` x ``crop`` (the seed's data_load_size = crop_size = 256, so no second
random crop), flipped horizontally with probability 1/2 (no rotation: the seed passes
--dataaug_no_rotate).  Images without boxes get a crop of side U_int[crop - delta, crop + delta]
anywhere.  The mask holds 0 for background and class + 1 inside every box (boxes are
filled largest first, so small objects stay visible where boxes overlap).

Randomness comes from numpy's global generator (saved in checkpoints by
darknet_kd.train.checkpoint.rng_state, so a resumed run draws the same crops).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from darknet_kd.data.darknet import label_path, read_data_file, read_labels, read_list
from darknet_kd.errors import DataError


def read_image(path) -> np.ndarray:
    """An RGB uint8 image (H, W, 3), or a DataError naming the file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError("image missing or not decodable by OpenCV", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_image(t: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 RGB (H, W, 3), rounded."""
    a = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).cpu().numpy()


def source_images(data_path, key: str = "train"):
    """(images, labels) of a Darknet .data file's ``key`` list; labels (N, 5) per image,
    validated against ``classes=``."""
    cfg = read_data_file(data_path)
    images = cfg.images(key)
    if not images:
        raise DataError(f"the {key} list is empty", cfg.resolve(key))
    return cfg, images, [read_labels(label_path(p), cfg.classes) for p in images]


def target_images(spec, num_classes: int, use_labels: bool = True):
    """The target images: one or more comma-separated list files or .data files (a .data gives
    its ``train`` list plus its ``unlabelled=`` list when it has one, as DriveSim's
    ``D-test.data``: the labelled target share and the unlabelled rest).  With ``use_labels``
    the label files that exist give target masks (images without a label file are
    unlabelled: their masks come from f_s)."""
    images = []
    for part in str(spec).split(","):
        path = Path(part.strip())
        if path.suffix == ".data":
            cfg = read_data_file(path)
            images += cfg.images("train")
            if cfg.get("unlabelled") is not None:
                images += cfg.images("unlabelled")
        else:
            images += read_list(path)
    if not images:
        raise DataError("the target list is empty", spec)
    labels = []
    for p in images:
        lp = label_path(p)
        labels.append(read_labels(lp, num_classes) if use_labels and lp.exists() else None)
    return images, labels


def pick_crop(W: int, H: int, boxes: np.ndarray, crop: int, delta: int, rng=np.random):
    """(x0, y0, side) of a crop in pixels; ``boxes`` (N, 4) x0 y0 x1 y1 in pixels."""
    if len(boxes):
        x0b, y0b, x1b, y1b = boxes[rng.randint(len(boxes))]
        bside = int(np.ceil(max(x1b - x0b, y1b - y0b)))
        lo, hi = max(bside, crop - delta), crop + delta
        s = int(rng.randint(lo, hi + 1)) if lo <= hi else bside

        def corner(b0, b1, size):
            if s <= size:   # box inside the crop, crop inside the image
                a, b = max(int(np.ceil(b1)) - s, 0), min(int(np.floor(b0)), size - s)
            else:           # the image inside the crop (zero padding), box inside the crop
                a, b = max(int(np.ceil(b1)) - s, size - s), min(int(np.floor(b0)), 0)
            return int(rng.randint(a, b + 1)) if a <= b else int(np.clip(round((b0 + b1 - s) / 2), min(a, b), max(a, b)))

        return corner(x0b, x1b, W), corner(y0b, y1b, H), s
    s = int(rng.randint(crop - delta, crop + delta + 1))
    x = int(rng.randint(min(0, W - s), max(0, W - s) + 1))
    y = int(rng.randint(min(0, H - s), max(0, H - s) + 1))
    return x, y, s


def box_mask(labels: np.ndarray, W: int, H: int, region=None) -> np.ndarray:
    """uint8 mask of the image (or of ``region`` = (x0, y0, side) in pixels): 0 background,
    class + 1 inside each box, larger boxes painted first."""
    x0, y0, s = region if region is not None else (0, 0, None)
    mw, mh = (s, s) if s is not None else (W, H)
    mask = np.zeros((mh, mw), np.uint8)
    if labels is None or not len(labels):
        return mask
    order = np.argsort(-(labels[:, 3] * labels[:, 4]), kind="stable")
    for c, cx, cy, w, h in labels[order]:
        bx0 = int(round((cx - w / 2) * W)) - x0
        by0 = int(round((cy - h / 2) * H)) - y0
        bx1 = int(round((cx + w / 2) * W)) - x0
        by1 = int(round((cy + h / 2) * H)) - y0
        mask[max(by0, 0):max(by1, 0), max(bx0, 0):max(bx1, 0)] = int(c) + 1
    return mask


class CropSampler:
    """Random crops (image in [-1, 1], mask) from a list of images with optional labels."""

    def __init__(self, images, labels, crop: int, delta: int, flip: bool = True):
        self.images, self.labels = list(images), list(labels)
        self.crop, self.delta, self.flip = crop, delta, flip

    def __len__(self):
        return len(self.images)

    def sample(self, index: int | None = None):
        """(image (3, c, c) float, mask (c, c) long, labelled: bool)."""
        rng = np.random
        i = rng.randint(len(self.images)) if index is None else index
        img = read_image(self.images[i])
        H, W = img.shape[:2]
        lab = self.labels[i]
        boxes = np.zeros((0, 4))
        if lab is not None and len(lab):
            boxes = np.stack([(lab[:, 1] - lab[:, 3] / 2) * W, (lab[:, 2] - lab[:, 4] / 2) * H,
                              (lab[:, 1] + lab[:, 3] / 2) * W, (lab[:, 2] + lab[:, 4] / 2) * H], 1)
        x0, y0, s = pick_crop(W, H, boxes, self.crop, self.delta, rng)
        patch = np.zeros((s, s, 3), np.uint8)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
        patch[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = img[iy0:iy1, ix0:ix1]
        mask = box_mask(lab, W, H, (x0, y0, s))
        if s != self.crop:
            interp = cv2.INTER_AREA if s > self.crop else cv2.INTER_LINEAR
            patch = cv2.resize(patch, (self.crop, self.crop), interpolation=interp)
            mask = cv2.resize(mask, (self.crop, self.crop), interpolation=cv2.INTER_NEAREST)
        if self.flip and rng.rand() < 0.5:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        return (to_tensor(np.ascontiguousarray(patch)), torch.from_numpy(np.ascontiguousarray(mask)).long(),
                lab is not None)

    def batch(self, n: int):
        xs, ms, ls = zip(*(self.sample() for _ in range(n)))
        return torch.stack(xs), torch.stack(ms), torch.tensor(ls)
