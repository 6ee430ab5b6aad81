"""COCO mAP@[.5:.95] through pycocotools (COCOeval, iouType='bbox').

Ground truth comes from the dataset converter (darknet_kd.data.convert.to_coco: image
id = position in the list + 1, category id = class + 1 by default, boxes in pixels,
``difficult=`` objects as ``iscrowd=1``); detections are exported here to a COCO
results list for the same images; both go to pycocotools unchanged, so the numbers are
pycocotools' own. The same dicts can be written with :func:`write_json`.

Detections (per image, in the ground truth's image order): ``(boxes, probs)`` with dense
per-class probs or ``(boxes, classes, scores)``, boxes relative ``cx,cy,w,h``. As
Darknet's print_cocos (detector.c) does, every det x class with prob > 0 becomes one
result with score = prob, and the box corners are clipped to the image before
``[x, y, w, h]`` (absolute pixels, top-left corner) is formed.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np

from ..errors import DarknetKDError
from ..fileio import atomic_write
from .voc_map import detection_pairs

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def rel_to_abs_xywh(boxes, width: int, height: int) -> np.ndarray:
    """Relative ``cx,cy,w,h`` -> absolute ``x,y,w,h`` clipped to the image (print_cocos)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1 = np.maximum((b[:, 0] - b[:, 2] / 2) * width, 0)
    y1 = np.maximum((b[:, 1] - b[:, 3] / 2) * height, 0)
    x2 = np.minimum((b[:, 0] + b[:, 2] / 2) * width, width)
    y2 = np.minimum((b[:, 1] + b[:, 3] / 2) * height, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], 1)


def dets_to_coco(gt: dict, detections) -> list[dict]:
    """COCO results list for the images of ``gt`` (same order); class ``c`` is the
    category ``gt["categories"][c]``."""
    if len(detections) != len(gt["images"]):
        raise DarknetKDError(f"{len(detections)} detection lists for {len(gt['images'])} images")
    ids = [int(c["id"]) for c in gt["categories"]]
    res = []
    for img, d in zip(gt["images"], detections):
        boxes, det, cls, prob = detection_pairs(d, len(ids), img.get("file_name"))
        xywh = rel_to_abs_xywh(boxes, img["width"], img["height"])[det]
        for (x, y, w, h), c, p in zip(xywh, cls, prob):
            res.append({"image_id": img["id"], "category_id": ids[c],
                        "bbox": [float(x), float(y), float(w), float(h)], "score": float(p)})
    return res


@dataclass
class CocoResult:
    stats: np.ndarray          # the 12 numbers of COCOeval.summarize(), STAT_NAMES order
    per_class_ap: np.ndarray   # (C,) AP@[.5:.95] (area all, 100 dets), NaN where a class has no truth
    summary: str               # pycocotools' printed summary

    @property
    def map(self) -> float:
        return float(self.stats[0])

    def to_dict(self, names=None) -> dict:
        names = names or [str(i) for i in range(len(self.per_class_ap))]
        return {"stats": {k: float(v) for k, v in zip(STAT_NAMES, self.stats)},
                "per_class_ap": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, self.per_class_ap)}}


def evaluate_coco(gt: dict, results: list[dict]) -> CocoResult:
    """pycocotools' bbox evaluation of ``results`` against ``gt`` (COCO dicts)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))  # pycocotools mutates what it is given
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    # precision[T, R, K, A, M]: area 'all' (0), maxDets 100 (last); -1 = no truth
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = np.full(prec.shape[2], np.nan)
    for k in range(prec.shape[2]):
        p = prec[:, :, k]
        if (p > -1).any():
            per_class[k] = p[p > -1].mean()
    # categories are in sorted-id order in COCOeval; report them in class order
    order = np.argsort(np.argsort([c["id"] for c in gt["categories"]]))
    return CocoResult(stats=np.asarray(ev.stats, np.float64), per_class_ap=per_class[order],
                      summary=summary.getvalue())


def coco_map(gt: dict, detections) -> CocoResult:
    """COCO mAP@[.5:.95] of Darknet-style detections against a COCO ground truth."""
    return evaluate_coco(gt, dets_to_coco(gt, detections))


def write_json(path, obj) -> None:
    """Write a COCO dict / results list as JSON (temporary name + rename)."""
    atomic_write(path, json.dumps(obj))
