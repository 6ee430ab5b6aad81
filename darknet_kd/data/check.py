"""`darknet-kd check DATA`: validate a whole Darknet dataset and print its statistics.

Checks: the .data file; ``names=`` has ``classes=`` names; every list named by ``train=``,
``valid=`` (and ``test=`` if present) opens; every image exists and is an image
(header read with Pillow; ``--decode`` decodes it fully with OpenCV); every label file
parses strictly (darknet.read_labels); a ``difficult=`` list (Darknet's detector map) is
parallel to ``valid=`` and its label files parse.  Every problem is reported (file:line),
not only the first; the exit status is 1 when there is any.

Statistics per list: images, boxes per class, images without boxes, and a histogram of
box sizes sqrt(w*h) in pixels of the original image (COCO's small < 32 <= medium < 96 <=
large, refined).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DarknetKDError, DataError
from .darknet import label_path, read_data_file, read_labels, read_list

LIST_KEYS = ("train", "valid", "test")
SIZE_BINS = (0, 8, 16, 32, 64, 96, 128, 256, 512, float("inf"))


def image_size(path, decode: bool = False) -> tuple[int, int]:
    """(width, height) of an image file; DataError if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image not found", path)
    if decode:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataError("OpenCV cannot decode the image", path)
        return img.shape[1], img.shape[0]
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # Pillow raises many types for bad files
        raise DataError(f"not a readable image (Pillow: {type(e).__name__})", path) from None
    if w < 1 or h < 1:
        raise DataError(f"image has size {w}x{h}", path)
    return w, h


class ListStats:
    def __init__(self, num_classes: int):
        self.images = 0
        self.empty = 0
        self.per_class = Counter()
        self.sizes: list[float] = []
        self.num_classes = num_classes

    def add(self, labels: np.ndarray, wh):
        self.images += 1
        if not len(labels):
            self.empty += 1
            return
        self.per_class.update(int(c) for c in labels[:, 0])
        if wh is not None:
            self.sizes.extend(np.sqrt(labels[:, 3] * wh[0] * labels[:, 4] * wh[1]).tolist())

    def report(self, names) -> str:
        boxes = sum(self.per_class.values())
        lines = [f"  images {self.images}, boxes {boxes}, images without boxes {self.empty}"]
        width = max(len(n) for n in names)
        for c, n in enumerate(names):
            lines.append(f"    {c:3d} {n:<{width}} {self.per_class.get(c, 0):8d}")
        if self.sizes:
            hist, _ = np.histogram(self.sizes, bins=SIZE_BINS)
            lines.append("  box size sqrt(w*h) in pixels:")
            peak = max(hist.max(), 1)
            for lo, hi, k in zip(SIZE_BINS[:-1], SIZE_BINS[1:], hist):
                rng = f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}"
                lines.append(f"    {rng:>9} {k:8d} {'#' * int(round(40 * k / peak))}")
        return "\n".join(lines)


def check_dataset(data_path, decode: bool = False, out=None):
    """Validate the dataset of ``data_path``; print statistics to ``out``.  Returns
    (errors: list[DataError], stats: dict list-key -> ListStats)."""
    out = sys.stdout if out is None else out
    cfg = read_data_file(data_path)
    errors: list[DarknetKDError] = []

    def record(e):
        errors.append(e)

    names = [str(i) for i in range(cfg.classes)]
    if cfg.names is None:
        record(DataError("no 'names=' entry", cfg.path))
    else:
        try:
            names = cfg.class_names()
        except DataError as e:
            record(e)
    if cfg.backup is not None and not cfg.resolve("backup").is_dir():
        print(f"note: backup folder {cfg.backup} does not exist (Darknet needs it to save weights)", file=out)

    stats = {}
    valid_images = None
    for key in LIST_KEYS:
        if cfg.get(key) is None:
            continue
        try:
            images = cfg.images(key)
        except DataError as e:
            record(e)
            continue
        if key == "valid":
            valid_images = images
        list_file = cfg.resolve(key)
        st = ListStats(cfg.classes)
        for n, img in enumerate(tqdm(images, desc=f"check {key}", unit="img", leave=False,
                                     disable=len(images) < 500), 1):
            wh = labels = None
            try:
                wh = image_size(img, decode)
            except DataError as e:
                record(DataError(f"{e.message}: {img}", list_file, n))
            try:
                labels = read_labels(label_path(img), cfg.classes)
            except DataError as e:
                record(e)
            if labels is not None:
                st.add(labels, wh)
        stats[key] = st
        print(f"{key}: {list_file}", file=out)
        print(st.report(names), file=out)

    if cfg.get("difficult") is not None:
        try:
            dif = read_list(cfg.resolve("difficult"), anchors=(cfg.root,))
            if valid_images is not None and len(dif) != len(valid_images):
                record(DataError(f"difficult= list has {len(dif)} entries, valid= has {len(valid_images)} "
                                 "(Darknet pairs them by position)", cfg.path, cfg._lines.get("difficult")))
            ndif = 0
            for p in dif:
                try:
                    ndif += len(read_labels(label_path(p), cfg.classes))
                except DataError as e:
                    record(e)
            print(f"difficult: {ndif} boxes ignored by the evaluator", file=out)
        except DataError as e:
            record(e)
    return errors, stats


def add_parser(sub):
    p = sub.add_parser("check", help="validate a Darknet dataset (.data) and print its statistics")
    p.add_argument("data", help="the .data file")
    p.add_argument("--decode", action="store_true", help="decode every image fully (slower than a header check)")
    p.add_argument("--max-errors", type=int, default=50, help="errors to print (all are counted)")
    p.set_defaults(func=run)


def run(args):
    errors, _ = check_dataset(args.data, args.decode)
    if errors:
        for e in errors[: args.max_errors]:
            print(f"error: {e}", file=sys.stderr)
        if len(errors) > args.max_errors:
            print(f"... and {len(errors) - args.max_errors} more", file=sys.stderr)
        print(f"{args.data}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.data}: OK")
    return 0
