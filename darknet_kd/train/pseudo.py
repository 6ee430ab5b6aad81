"""Pseudo-label threshold selection and audit.

* :func:`sweep_threshold` — the confidence threshold for ``darknet-kd pseudo-label``,
  picked on a *labelled validation split of the target domain* (never on test): the
  teacher detects once at a low threshold, then for every candidate threshold the
  pseudo-labels it would write (one label per NMS box, its most probable class above the
  threshold — the rule of :func:`darknet_kd.detect.pseudo_label`) are matched against the
  validation labels at IoU ≥ 0.5, and the threshold with the best F1 (ties: the lower
  threshold) wins.  F1 is the criterion because the student sees the pseudo-labels as
  truths: a missed object becomes background (a false negative teaches "no object") and
  a false box teaches a wrong object, so both errors count.  (mAP does not depend on a
  threshold; the mAP-best threshold would need one student per threshold.)
* :func:`audit` — precision and recall of a written pseudo-label dataset against the
  hidden labels of the images it labelled (DriveSim keeps the unlabelled split's labels
  apart for this).

Matching (:func:`match_counts`): pseudo-labels in confidence order each claim the
unclaimed truth of their class with the highest IoU, if that IoU ≥ ``iou``; claimed = TP,
unclaimed pseudo-label = FP, unclaimed truth = FN.  ``darknet-kd pseudo-thresh`` and
``darknet-kd pseudo-audit`` print both as tables.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.darknet import label_path, read_data_file, read_labels, read_list
from ..errors import DataError
from ..eval.voc_map import box_iou_matrix
from ..fileio import atomic_write

THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def match_counts(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of label rows ``pred`` (class cx cy w h, in confidence order) against
    ``truth`` rows, same class only, greedy as the module docstring says."""
    pred = np.asarray(pred, np.float32).reshape(-1, 5)
    truth = np.asarray(truth, np.float32).reshape(-1, 5)
    if not len(pred) or not len(truth):
        return 0, len(pred), len(truth)
    ious = box_iou_matrix(pred[:, 1:], truth[:, 1:])
    ious[pred[:, 0][:, None] != truth[:, 0][None, :]] = -1.0
    free = np.ones(len(truth), bool)
    tp = 0
    for i in range(len(pred)):
        cand = np.where(free, ious[i], -1.0)
        j = int(cand.argmax())
        if cand[j] >= iou:
            free[j] = False
            tp += 1
    return tp, len(pred) - tp, int(free.sum())


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}


def labels_at(dets, thresh: float) -> np.ndarray:
    """The pseudo-label rows ``pseudo_label`` writes at ``thresh`` from one image's
    detections (:func:`darknet_kd.detect.pseudo_label_rows`)."""
    from ..detect import pseudo_label_rows

    return pseudo_label_rows(dets, thresh)[0]


def sweep_threshold(model, images, truths, thresholds=THRESHOLDS, iou: float = 0.5, batch_size: int = 8,
                    progress: bool = True) -> dict:
    """Pick the pseudo-label threshold with the best F1 on ``images`` with labels ``truths``
    (one (g, 5) array per image); returns {"thresh", "table": [{thresh, tp, fp, fn,
    precision, recall, f1}, ...]}."""
    from ..detect import detect

    thresholds = sorted(float(t) for t in thresholds)
    if not thresholds or thresholds[0] <= 0 or thresholds[-1] >= 1:
        raise DataError(f"thresholds must lie in (0, 1), got {thresholds}")
    all_dets = [dets for _, _, dets in detect(model, images, min(thresholds), batch_size=batch_size,
                                                progress=progress)]
    table = []
    for t in thresholds:
        tp = fp = fn = 0
        for dets, truth in zip(all_dets, truths):
            a, b, c = match_counts(labels_at(dets, t), truth, iou)
            tp, fp, fn = tp + a, fp + b, fn + c
        table.append({"thresh": t, **_prf(tp, fp, fn)})
    best = max(table, key=lambda r: (r["f1"], -r["thresh"]))
    return {"thresh": best["thresh"], "iou": iou, "table": table}


def audit(pseudo_dir, truth_labels, iou: float = 0.5, num_classes: int | None = None) -> dict:
    """Precision/recall of the pseudo-label dataset ``pseudo_dir`` (written by
    ``darknet-kd pseudo-label``) against ``truth_labels``: the hidden label files, one per
    pseudo-labelled image, in the order of ``pseudo_dir/train.txt``."""
    pseudo_dir = Path(pseudo_dir)
    images = read_list(pseudo_dir / "train.txt", anchors=(pseudo_dir,))
    truth_labels = [Path(p) for p in truth_labels]
    if len(images) != len(truth_labels):
        raise DataError(f"{len(images)} pseudo-labelled images but {len(truth_labels)} hidden label files",
                        pseudo_dir / "train.txt")
    scores = json.loads((pseudo_dir / "scores.json").read_text()).get("scores", {}) \
        if (pseudo_dir / "scores.json").exists() else {}
    tp = fp = fn = 0
    per_class: dict[int, list[int]] = {}
    for img, tl in zip(images, truth_labels):
        if Path(img.name.split("_", 1)[-1]).stem != tl.stem:  # pseudo-label names images NNNNNN_<name>
            raise DataError(f"pseudo image {img.name} does not correspond to hidden label {tl.name} "
                            "(the lists must be in the same order)", pseudo_dir / "train.txt")
        pred = read_labels(label_path(img), num_classes)
        conf = scores.get(img.name)
        if conf is not None and len(conf) == len(pred):
            pred = pred[np.argsort(-np.asarray(conf), kind="stable")]
        truth = read_labels(tl, num_classes)
        a, b, c = match_counts(pred, truth, iou)
        tp, fp, fn = tp + a, fp + b, fn + c
        for k in set(pred[:, 0].astype(int)) | set(truth[:, 0].astype(int)):
            r = match_counts(pred[pred[:, 0] == k], truth[truth[:, 0] == k], iou)
            acc = per_class.setdefault(int(k), [0, 0, 0])
            for m in range(3):
                acc[m] += r[m]
    return {"images": len(images), "iou": iou, **_prf(tp, fp, fn),
            "per_class": {k: _prf(*v) for k, v in sorted(per_class.items())}}


def format_table(rows, keys=("thresh", "precision", "recall", "f1", "tp", "fp", "fn")) -> str:
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("| " + " | ".join(fmt(r[k]) for k in keys) + " |\n" for r in rows)


# ---------------------------------------------------------------- commands

def add_parser(sub):
    p = sub.add_parser("pseudo-thresh", help="pick the pseudo-label threshold (best F1) on a labelled split")
    p.add_argument("data", help=".data of the labelled target validation split")
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("--key", default="valid", help="list of the .data to use (default valid)")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--json", help="write the sweep as JSON here")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_thresh)
    q = sub.add_parser("pseudo-audit", help="precision/recall of pseudo-labels against hidden labels")
    q.add_argument("pseudo_dir", help="folder written by `darknet-kd pseudo-label`")
    q.add_argument("truth_list", help="image list of the same images whose label files hold the hidden labels")
    q.add_argument("--iou", type=float, default=0.5)
    q.add_argument("--json", help="write the audit as JSON here")
    q.set_defaults(func=_run_audit)


def _run_thresh(args) -> int:
    from ..data.dataset import load_all_labels
    from ..model import load

    data = read_data_file(args.data)
    model = load(args.cfg, args.weights).to(args.device)
    images = data.images(args.key)
    res = sweep_threshold(model, images, load_all_labels(images, data.classes), iou=args.iou)
    print(format_table(res["table"]), end="")
    print(f"best F1 at thresh {res['thresh']:.2f}")
    if args.json:
        atomic_write(args.json, json.dumps(res, indent=1) + "\n")
    return 0


def _run_audit(args) -> int:
    truths = [label_path(p) for p in read_list(args.truth_list)]
    res = audit(args.pseudo_dir, truths, args.iou)
    print(f"pseudo-labels of {res['images']} images at IoU {args.iou}: precision {res['precision']:.3f}, "
          f"recall {res['recall']:.3f}, F1 {res['f1']:.3f} (TP {res['tp']}, FP {res['fp']}, FN {res['fn']})")
    if args.json:
        atomic_write(args.json, json.dumps(res, indent=1) + "\n")
    return 0
