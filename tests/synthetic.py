"""Small synthetic Darknet datasets and a tiny cfg for fast training tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from darknet_kd.data.darknet import DataConfig, write_data_file, write_labels, write_list, write_names

TINY_CFG = """[net]
batch=4
subdivisions=2
width=96
height=96
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.01
burn_in=4
max_batches=20
policy=steps
steps=15
scales=.1
hue=0
saturation=1
exposure=1
flip=1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=12,12, 20,30, 30,20
classes=2
num=3
jitter=.1
ignore_thresh=.7
truth_thresh=1
random=0
"""


def make_rect_dataset(root: Path, n: int = 8, size: int = 96, classes: int = 2, seed: int = 0,
                      valid: bool = True) -> Path:
    """Coloured rectangles (class 0 red, class 1 blue) on grey noise; returns the .data path."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
        labels = []
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(0, classes))
            w, h = rng.uniform(0.2, 0.45, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            x1, y1 = int(round((cx - w / 2) * size)), int(round((cy - h / 2) * size))
            x2, y2 = int(round((cx + w / 2) * size)), int(round((cy + h / 2) * size))
            color = (40, 40, 220) if c == 0 else (220, 60, 40)
            cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1)
            labels.append([c, (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size])
        p = img_dir / f"{i:04d}.png"
        cv2.imwrite(str(p), img)
        # A bare /images/ folder is not rewritten by Darknet's rule: labels lie beside the images.
        write_labels(p.with_suffix(".txt"), np.array(labels, np.float32))
        paths.append(p)
    write_list(root / "train.txt", paths)
    write_list(root / "valid.txt", paths)
    write_names(root / "obj.names", [f"c{i}" for i in range(classes)])
    data = DataConfig(classes=classes, train=str(root / "train.txt"), valid=str(root / "valid.txt") if valid else None,
                      names=str(root / "obj.names"), backup=str(root / "backup"))
    write_data_file(root / "obj.data", data)
    return root / "obj.data"


def tiny_cfg(root: Path, **overrides) -> Path:
    text = TINY_CFG
    for k, v in overrides.items():
        import re

        text = re.sub(rf"(?m)^{k}=.*$", f"{k}={v}", text)
    p = Path(root) / "tiny.cfg"
    p.write_text(text)
    return p
