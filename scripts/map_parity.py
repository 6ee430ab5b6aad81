#!/usr/bin/env python
"""`darknet-kd map` against `darknet detector map`: ``scripts/map_parity.py --darknet PATH``.

Needs a Darknet binary (AlexeyAB/darknet built with its own Makefile: ``make`` with
GPU=0 OPENCV=0, i.e. -Ofast).  In ``--out`` (default runs/map_parity) it makes a test set,
then runs both programs and compares the printed lines:

- a yolov3-tiny-drivesim.cfg network with random weights whose head convs are rescaled so
  that objectness and class scores spread (about a third of the 960 rows per image pass
  the 0.005 threshold, a few pass 0.25), written as .weights;
- PNG images (Darknet's OPENCV=0 build decodes with stb_image, we with OpenCV: for PNG the
  bytes are the same; JPEG decoders differ): 24 at the network size (256x256: no resize),
  24 at 256x128 and 24 of mixed sizes from 97x61 to 640x480 (each resized by Darknet's
  resize_image or letterbox_image and by darknet_kd.data.dataset's transcription of them);
- labels made from the network's own detections (the 6 best, jittered by 4 % of the box
  size, 15 % with a random class), so APs are in a useful range.

Cases: points 0 / 11 / 101, IoU .5 and .75, nms_kind default / greedynms / diounms, a
letter_box=1 cfg, and the mixed sizes stretched and letterboxed.  Prints one line per case
(IDENTICAL or the differing lines) and writes ``map_parity.md`` / ``map_parity.json``.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.darknet import read_data_file, write_labels  # noqa: E402
from darknet_kd.data.dataset import EvalDataset, collate  # noqa: E402
from darknet_kd.eval.evaluate import darknet_row_order, detect_batch, evaluate  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.model import Darknet, load  # noqa: E402

CFG = ROOT / "cfg" / "yolov3-tiny-drivesim.cfg"
NAMES = ROOT / "cfg" / "drivesim.names"
REPORT = re.compile(r"^\s*(detections_count|class_id|for conf_thresh|IoU threshold|mean average precision)")


def make_weights(path: Path, images: list[Path]) -> None:
    """Random weights; each head channel rescaled to a chosen mean/std over ``images``."""
    torch.manual_seed(0)
    model = Darknet.from_cfg(CFG).eval()
    x = torch.stack([torch.from_numpy(cv2.imread(str(p))[:, :, ::-1].transpose(2, 0, 1).copy()).float() / 255
                     for p in images])
    with torch.no_grad():
        heads = model(x, raw=True)
        layers = {m.index: m for m in model.layers}
        target = {0: (0.0, 1.0), 1: (0.0, 1.0), 2: (0.0, 0.4), 3: (0.0, 0.4), 4: (-6.0, 2.0)}  # x y w h obj
        for y, h in zip(model.yolo_layers, heads):
            conv = next(m for m in layers[y.index - 1].modules() if isinstance(m, torch.nn.Conv2d))
            for ch in range(h.shape[1]):
                mean, std = target.get(ch % (5 + y.classes), (0.0, 2.0))  # classes: (0, 2)
                s = std / float(h[:, ch].std())
                conv.weight[ch] *= s
                conv.bias[ch] = mean - (float(h[:, ch].mean()) - float(conv.bias[ch])) * s
    model.save_weights(path)


MIXED = [(97, 61), (640, 480), (300, 200), (200, 311), (416, 416), (255, 129), (129, 255), (512, 96)]


def make_images(folder: Path, size, n: int, rng) -> list[Path]:
    """``n`` PNGs of ``size`` (w, h), or cycling through :data:`MIXED` when size is None."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = size or MIXED[i % len(MIXED)]
        img = cv2.resize(rng.uniform(0, 255, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, max(w - 40, 1))), int(rng.integers(0, max(h - 30, 1)))
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 90))),
                          tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
        paths.append(folder / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.clip(img, 0, 255).astype(np.uint8))
    return paths


def make_labels(model, images: list[Path], rng) -> None:
    """Labels = the model's 6 best detections inside the image, jittered; 15 % relabelled."""
    net = model.net
    ds = EvalDataset(images, model.num_classes, net.width, net.height, bool(net.letter_box),
                     labels=[np.zeros((0, 5), np.float32)] * len(images))
    row_pos = darknet_row_order(model)
    for i, p in enumerate(images):
        x, _, infos = collate([ds[i]])
        with torch.no_grad():
            (boxes, probs), = detect_batch(model, x, infos, row_pos)
        inside = (boxes[:, 0] > 0.05) & (boxes[:, 0] < 0.95) & (boxes[:, 1] > 0.05) & (boxes[:, 1] < 0.95)
        best = [j for j in np.argsort(-probs.max(1)) if inside[j]][:6]
        b = boxes[best].astype(np.float64)
        b += rng.normal(0, 0.04, b.shape) * b[:, [2, 3, 2, 3]]
        x1, y1 = np.clip(b[:, 0] - b[:, 2] / 2, 0, 1), np.clip(b[:, 1] - b[:, 3] / 2, 0, 1)
        x2, y2 = np.clip(b[:, 0] + b[:, 2] / 2, 0, 1), np.clip(b[:, 1] + b[:, 3] / 2, 0, 1)
        cls = np.where(rng.uniform(size=len(best)) < 0.85, probs[best].argmax(1),
                       rng.integers(0, model.num_classes, len(best)))
        ok = (x2 - x1 > 0.01) & (y2 - y1 > 0.01)
        rows = np.c_[cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1][ok]
        write_labels(p.with_suffix(".txt"), rows)


def cfg_variant(out: Path, name: str, net_lines: str = "", yolo_lines: str = "") -> Path:
    text = CFG.read_text().replace("[net]\n", "[net]\n" + net_lines).replace("[yolo]\n", "[yolo]\n" + yolo_lines)
    (out / name).write_text(text)
    return out / name


def darknet_lines(darknet: str, data: Path, cfg: Path, weights: Path, points: int, iou: float) -> list[str]:
    cmd = [darknet, "detector", "map", str(data), str(cfg), str(weights), "-points", str(points),
           "-iou_thresh", str(iou)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(darknet).resolve().parent)
    if out.returncode:
        sys.exit(f"darknet failed ({out.returncode}): {out.stderr[-2000:]}")
    return [line.strip() for line in out.stdout.replace("\r", "\n").split("\n") if REPORT.match(line)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--darknet", required=True, help="the darknet binary")
    ap.add_argument("--out", default="runs/map_parity")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out).resolve()
    rng = np.random.default_rng(0)
    sets = {"square": make_images(out / "square", (256, 256), 24, rng),
            "wide": make_images(out / "wide", (256, 128), 24, rng),
            "mixed": make_images(out / "mixed", None, 24, rng)}
    weights = out / "random.weights"
    make_weights(weights, sets["square"][:4])
    cfgs = {"default": cfg_variant(out, "default.cfg"),
            "greedynms": cfg_variant(out, "greedynms.cfg", yolo_lines="nms_kind=greedynms\n"),
            "diounms": cfg_variant(out, "diounms.cfg", yolo_lines="nms_kind=diounms\nbeta_nms=0.8\n"),
            "letter_box": cfg_variant(out, "letter_box.cfg", net_lines="letter_box=1\n")}
    data = {}
    for name, images in sets.items():
        (out / f"{name}.txt").write_text("".join(f"{p}\n" for p in images))
        data[name] = out / f"{name}.data"
        data[name].write_text(f"classes=7\nvalid={out / f'{name}.txt'}\nnames={NAMES}\n")
    make_labels(load(cfgs["default"], weights), sets["square"], rng)
    make_labels(load(cfgs["letter_box"], weights), sets["wide"], rng)
    make_labels(load(cfgs["default"], weights), sets["mixed"], rng)

    cases = [("square", "default", 0, 0.5), ("square", "default", 11, 0.5), ("square", "default", 101, 0.75),
             ("square", "greedynms", 0, 0.5), ("square", "diounms", 11, 0.5), ("wide", "letter_box", 0, 0.5),
             ("mixed", "default", 0, 0.5), ("mixed", "default", 101, 0.75), ("mixed", "letter_box", 11, 0.5)]
    rows = []
    for images, cfg, points, iou in cases:
        dk = darknet_lines(a.darknet, data[images], cfgs[cfg], weights, points, iou)
        res = evaluate(load(cfgs[cfg], weights), read_data_file(data[images]), iou_thresh=iou, points=points,
                       workers=0, progress=False)
        ours = [line.strip() for line in res.report().split("\n") if REPORT.match(line)]
        same = dk == ours
        diff = [] if same else list(difflib.unified_diff(dk, ours, "darknet", "darknet-kd", lineterm="", n=0))
        rows.append({"images": images, "cfg": cfg, "points": points, "iou": iou, "identical": same,
                     "map": res.darknet.map, "detections": res.darknet.detections_count,
                     "truths": res.darknet.unique_truth_count, "diff": diff})
        print(f"{images:6s} {cfg:10s} points={points:<3d} iou={iou}: mAP {res.darknet.map * 100:6.2f} %  "
              f"{'IDENTICAL' if same else 'DIFFERENT'}", flush=True)
        for line in diff[2:]:
            print("    " + line)
    command = f"scripts/map_parity.py --darknet {a.darknet} --out {a.out}"
    md = [f"`{command}`", "", "| images | cfg | points | IoU | detections | truths | mAP % | report lines |",
          "|---|---|---:|---:|---:|---:|---:|---|"]
    md += [f"| {r['images']} | {r['cfg']} | {r['points']} | {r['iou']} | {r['detections']} | {r['truths']} "
           f"| {r['map'] * 100:.2f} | {'identical' if r['identical'] else 'differ'} |" for r in rows]
    atomic_write(out / "map_parity.md", "\n".join(md) + "\n")
    atomic_write(out / "map_parity.json", json.dumps({"command": command, "cases": rows}, indent=1) + "\n")
    print(f"\n{command}\nwrote {out / 'map_parity.md'} and .json")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
