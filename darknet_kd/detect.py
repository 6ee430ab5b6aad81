"""Detection and pseudo-labelling: `darknet-kd detect` and `darknet-kd pseudo-label`.

Both run the same pipeline as `darknet-kd map` (:func:`darknet_kd.eval.evaluate.detect_batch`:
decode, threshold, letterbox correction, Darknet's NMS through darknet_kd.ops) and keep the
(detection, class) pairs whose probability exceeds ``--thresh`` (Darknet's default .25), as
`darknet detector test` prints them.

* ``detect`` writes Darknet's JSON (`detector test ... -out result.json`: frame_id, filename,
  objects with class_id, name, relative_coordinates center_x/center_y/width/height,
  confidence) and, with ``--out``, one drawn image per input.
* ``pseudo-label`` writes a Darknet dataset of the images with the teacher's detections as
  labels: ``OUT/JPEGImages/<n>_<name>`` (hard links, or copies across file systems),
  ``OUT/labels/<n>_<name>.txt`` (found by Darknet's image -> label rule), ``OUT/train.txt``,
  ``OUT/pseudo.data``, and the scores in the sidecar ``OUT/scores.json`` (image -> one score
  per label line).  One label per detection: its most probable class above the threshold.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .data.darknet import (DataConfig, read_data_file, read_list, write_data_file, write_labels, write_list)
from .data.dataset import EvalDataset, collate
from .errors import DataError
from .fileio import atomic_path, atomic_write

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff"}


@dataclass
class Detection:
    class_id: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]  # cx, cy, w, h relative to the image
    det_index: int                          # which NMS survivor (one box may carry several classes)

    def xyxy(self, w: int, h: int) -> tuple[int, int, int, int]:
        cx, cy, bw, bh = self.box
        return (int(max(0, (cx - bw / 2) * w)), int(max(0, (cy - bh / 2) * h)),
                int(min(w - 1, (cx + bw / 2) * w)), int(min(h - 1, (cy + bh / 2) * h)))


def image_paths(source) -> list[Path]:
    """IMG, a folder of images, or a list file (one path a line)."""
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError("no images in this folder", p)
        return files
    if not p.exists():
        raise DataError("no such image, folder or list", p)
    if p.suffix.lower() in IMAGE_EXTS:
        return [p]
    return read_list(p)


def detect(model, images, thresh: float = 0.25, names=None, batch_size: int = 8, workers: int = 0,
           progress: bool = False):
    """Run ``model`` on image paths; yields ``(path, (w, h), [Detection, ...])`` per image."""
    from .eval.evaluate import darknet_row_order, detect_batch

    images = [Path(p) for p in images]
    names = names or [str(i) for i in range(model.num_classes)]
    net = model.net
    empty = [np.zeros((0, 5), np.float32)] * len(images)
    ds = EvalDataset(images, model.num_classes, net.width, net.height, bool(net.letter_box), labels=empty)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    device = next(model.parameters()).device
    row_pos = darknet_row_order(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _, infos in tqdm(loader, desc="detect", unit="batch", disable=not progress, file=sys.stderr):
                for info, (boxes, probs) in zip(infos, detect_batch(model, x.to(device), infos, row_pos)):
                    dets = []
                    for d, c in zip(*np.nonzero(probs > thresh)):
                        dets.append(Detection(int(c), names[c], float(probs[d, c]), tuple(map(float, boxes[d])), int(d)))
                    dets.sort(key=lambda t: -t.confidence)
                    yield Path(info["path"]), tuple(info["orig_size"]), dets
    finally:
        model.train(was_training)


def darknet_json(frame_id: int, path, dets) -> dict:
    return {"frame_id": frame_id, "filename": str(path), "objects": [
        {"class_id": d.class_id, "name": d.name, "confidence": round(d.confidence, 6),
         "relative_coordinates": dict(zip(("center_x", "center_y", "width", "height"),
                                          (round(v, 6) for v in d.box)))} for d in dets]}


def _palette(c: int):
    rng = np.random.default_rng(c * 7919 + 17)
    return tuple(int(v) for v in rng.integers(60, 255, 3))


def draw(img: np.ndarray, dets) -> np.ndarray:
    """Boxes and 'name conf' tags drawn with OpenCV (BGR image, returns a copy)."""
    out = img.copy()
    h, w = out.shape[:2]
    th = max(1, round(min(w, h) / 300))
    for d in dets:
        x1, y1, x2, y2 = d.xyxy(w, h)
        color = _palette(d.class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, th)
        label = f"{d.name} {d.confidence:.2f}"
        (tw, tht), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35 * th, 1)
        ty = max(y1, tht + base)
        cv2.rectangle(out, (x1, ty - tht - base), (x1 + tw, ty), color, -1)
        cv2.putText(out, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * th, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _load(args):
    from .model import load

    data = read_data_file(args.data)
    model = load(args.cfg, args.weights).to(args.device)
    if model.num_classes != data.classes:
        raise DataError(f"classes={data.classes} but the cfg's [yolo] layers have classes={model.num_classes}",
                        data.path)
    names = data.class_names() if data.names else None
    return data, model, names


def run_detect(args) -> int:
    data, model, names = _load(args)
    paths = image_paths(args.source)
    out = Path(args.out) if args.out else None
    frames = []
    for k, (path, (w, h), dets) in enumerate(detect(model, paths, args.thresh, names, args.batch, args.workers,
                                                    progress=len(paths) > 1), start=1):
        frames.append(darknet_json(k, path, dets))
        if not args.quiet:
            print(f"{path}: {len(dets)} objects")
            for d in dets:
                x1, y1, x2, y2 = d.xyxy(w, h)
                print(f"  {d.name}: {100 * d.confidence:.0f}%\t(left_x: {x1:4d}   top_y: {y1:4d}   "
                      f"width: {x2 - x1:4d}   height: {y2 - y1:4d})")
        if out is not None:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            with atomic_path(out / f"{path.stem}.jpg") as tmp:
                cv2.imwrite(str(tmp), draw(img, dets))
    if out is not None or args.json:
        atomic_write(Path(args.json) if args.json else out / "result.json", json.dumps(frames, indent=1) + "\n")
    return 0


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def pseudo_label_rows(dets, thresh: float = 0.0):
    """The label rows ``pseudo_label`` writes for one image's detections (sorted by
    confidence): one per NMS box, its best class with confidence > ``thresh``, the box's
    edges clipped to the image (as Darknet's correct_boxes clips them), empty boxes
    dropped; returns (rows (n, 5) float32 ``class cx cy w h``, confidences) in confidence order."""
    best: dict[int, Detection] = {}
    for d in dets:  # sorted by confidence: the first pair of a box is its best class
        if d.confidence > thresh:
            best.setdefault(d.det_index, d)
    chosen = sorted(best.values(), key=lambda d: -d.confidence)
    b = np.array([d.box for d in chosen], np.float32).reshape(-1, 4)
    x1, x2 = np.clip(b[:, 0] - b[:, 2] / 2, 0, 1), np.clip(b[:, 0] + b[:, 2] / 2, 0, 1)
    y1, y2 = np.clip(b[:, 1] - b[:, 3] / 2, 0, 1), np.clip(b[:, 1] + b[:, 3] / 2, 0, 1)
    labels = np.stack([np.array([d.class_id for d in chosen], np.float32), (x1 + x2) / 2, (y1 + y2) / 2,
                       x2 - x1, y2 - y1], 1).astype(np.float32).reshape(-1, 5)
    keep = (labels[:, 3] > 0) & (labels[:, 4] > 0)
    return labels[keep], [d.confidence for d, ok in zip(chosen, keep) if ok]


def pseudo_label(model, images, out, thresh: float = 0.25, names=None, batch_size: int = 8, workers: int = 0,
                 progress: bool = True) -> dict:
    """Write a Darknet dataset of ``images`` labelled by ``model`` (see the module docstring);
    returns counts.  The dataset's .data is ``out/pseudo.data``."""
    out = Path(out)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    listed, scores, n_labels = [], {}, 0
    for k, (path, _, dets) in enumerate(detect(model, images, thresh, names, batch_size, workers, progress)):
        labels, conf = pseudo_label_rows(dets)
        name = f"{k:06d}_{path.name}"
        img = out / "JPEGImages" / name
        _link(path, img)
        write_labels(out / "labels" / f"{Path(name).stem}.txt", labels)
        scores[name] = [round(c, 6) for c in conf]
        n_labels += len(labels)
        listed.append(img)
    write_list(out / "train.txt", listed)
    atomic_write(out / "scores.json", json.dumps({"thresh": thresh, "scores": scores}, indent=0) + "\n")
    if names:
        from .data.darknet import write_names

        write_names(out / "pseudo.names", names)
    write_data_file(out / "pseudo.data", DataConfig(classes=model.num_classes, train=str(out / "train.txt"),
                                                    names=str(out / "pseudo.names") if names else None))
    return {"images": len(listed), "labels": n_labels}


def run_pseudo_label(args) -> int:
    _, model, names = _load(args)
    counts = pseudo_label(model, image_paths(args.list), args.out, args.thresh, names, args.batch, args.workers)
    print(f"pseudo-labels: {counts['labels']} boxes on {counts['images']} images -> {Path(args.out) / 'pseudo.data'}")
    return 0


def _common(p):
    p.add_argument("data", help=".data file (names=, classes=)")
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("--thresh", type=float, default=0.25, help="confidence threshold (Darknet's default .25)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")


def add_parser(sub):
    p = sub.add_parser("detect", help="detect objects (darknet detector test): JSON and drawn images")
    _common(p)
    p.add_argument("source", metavar="IMG|DIR|LIST")
    p.add_argument("--out", help="folder for drawn images and result.json")
    p.add_argument("--json", help="write Darknet's JSON here (default OUT/result.json)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_detect)
    q = sub.add_parser("pseudo-label", help="label images with a model's detections (a Darknet dataset)")
    _common(q)
    q.add_argument("list", metavar="LIST", help="image list (or folder) to label")
    q.add_argument("out", metavar="OUT", help="output dataset folder")
    q.set_defaults(func=run_pseudo_label)
