"""Evaluation loader speed: images/s of EvalDataset + collate (Darknet-exact float32 resize and
letterbox, darknet_kd/data/dataset.py) against the loader it replaced, OpenCV INTER_LINEAR on
uint8 with 128 padding then /255 (the floor: OpenCV's SIMD resize).

    .venv/bin/python bench/eval_loader.py [--images 100] [--rounds 5] [--json out.json]

A DriveSim smoke set at 256x256 (JPEG) is written to a temporary folder (or ``--list`` names
an image list), and the same images enlarged to 640x480 (JPEG, the size of a COCO photo).
Each case reads the images in one process (workers=0, one thread, batches of 8), the two
loaders alternating for ``--rounds`` rounds; the best round of each counts, so a shared
machine's load disturbs the ratio little.  Cases: DriveSim at the network size equal to the
image (256: no resize, DriveSim's own setting), stretched to 416 and to 224, letterboxed to
416x256; the 640x480 images stretched and letterboxed to 416.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.dataset import EvalDataset, collate, letterbox_size, load_image  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402


class OpenCVEvalDataset(EvalDataset):
    """The previous evaluation input (not Darknet's): uint8 cv2.resize INTER_LINEAR, 128 grey."""

    def __getitem__(self, i):
        img = load_image(self.images[i])
        w, h = self.width, self.height
        if self.letter_box:
            new_w, new_h, dx, dy = letterbox_size(img.shape[1], img.shape[0], w, h)
            out = np.full((h, w, 3), 128, np.uint8)
            out[dy:dy + new_h, dx:dx + new_w] = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        else:
            out = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), torch.zeros((0, 5)), {}


def run(cls, images, w, h, lb) -> float:
    ds = cls(images, 7, w, h, lb, labels=[np.zeros((0, 5), np.float32)] * len(images))
    t = time.perf_counter()
    for s in range(0, len(ds), 8):
        x, _, _ = collate([ds[i] for i in range(s, min(s + 8, len(ds)))])
        assert x.dtype == torch.float32
    return len(ds) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--list", help="an image list instead of a fresh DriveSim smoke set")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if a.list:
            images = [Path(p.strip()) for p in Path(a.list).read_text().splitlines() if p.strip()]
        else:
            from darknet_kd.data.drivesim import generate
            generate(Path(tmp) / "ds", "smoke", seed=0, size=256, workers=1, progress=False)
            images = sorted((Path(tmp) / "ds").rglob("*.jpg"))
        images = images[: a.images]
        (Path(tmp) / "photo").mkdir()
        photos = [Path(tmp) / "photo" / f"{i}.jpg" for i in range(len(images))]
        for src, dst in zip(images, photos):
            cv2.imwrite(str(dst), cv2.resize(cv2.imread(str(src)), (640, 480), interpolation=cv2.INTER_CUBIC))
        first = cv2.imread(str(images[0]))
        sets = {f"{first.shape[1]}x{first.shape[0]}": images, "640x480": photos}
        load = os.getloadavg()[0]
        rows = []
        for name, w, h, lb in [(0, 256, 256, False), (0, 416, 416, False), (0, 224, 224, False), (0, 416, 256, True),
                               (1, 416, 416, False), (1, 416, 416, True)]:
            name = list(sets)[name]
            best = {"darknet": 0.0, "opencv": 0.0}
            for _ in range(a.rounds):
                best["darknet"] = max(best["darknet"], run(EvalDataset, sets[name], w, h, lb))
                best["opencv"] = max(best["opencv"], run(OpenCVEvalDataset, sets[name], w, h, lb))
            r = {"images": name, "net": f"{w}x{h}", "letter_box": lb, "count": len(images),
                 "darknet_exact_img_s": round(best["darknet"], 1), "opencv_uint8_img_s": round(best["opencv"], 1),
                 "ratio": round(best["darknet"] / best["opencv"], 3)}
            rows.append(r)
            print(f"{name:>8s} -> {r['net']:>8s} letter_box={int(lb)}: "
                  f"Darknet-exact {r['darknet_exact_img_s']:7.1f} img/s   "
                  f"OpenCV uint8 {r['opencv_uint8_img_s']:7.1f} img/s   ratio {r['ratio']:.2f}", flush=True)
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}")
    if a.json:
        atomic_write(a.json, json.dumps({"command": "bench/eval_loader.py " + " ".join(sys.argv[1:]),
                                         "source_images": "DriveSim smoke JPEG" if not a.list else a.list,
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
