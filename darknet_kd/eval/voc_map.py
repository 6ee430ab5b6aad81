"""mAP exactly as ``darknet detector map`` computes it (AlexeyAB src/detector.c:
validate_detector_map), the project's one mAP implementation.

Input, one image at a time (``DarknetMap.add_image`` / ``add_pairs``):

- detections: boxes ``(n, 4)`` as **relative** ``cx, cy, w, h`` (fractions of the
  original image -- what Darknet's get_network_boxes returns after
  correct_yolo_boxes, and what label files hold), with either a per-class
  probability matrix ``(n, C)`` (Darknet's ``dets[i].prob``: objectness x class
  probability, already zeroed at or below the 0.005 detection threshold and by
  NMS) or ``(class, prob)`` pairs. Every det x class with ``prob > 0`` becomes one
  ranked detection, in the order det-major, class-minor (Darknet's loop order).
- truths ``(g, 5)`` rows ``class, cx, cy, w, h`` (a label file's lines, relative).
- difficult truths ``(k, 5)``, same layout: Darknet's ``difficult=`` list names a
  parallel label file holding only the difficult objects; they are never counted
  as ground truth, and an unmatched detection that hits one is dropped.

What Darknet does, and so this module does:

- A detection is matched to the truth **of its class** with the highest IoU that
  is strictly greater than ``iou_thresh`` (first truth wins ties).
- All detections of all images are sorted by prob, descending (glibc's qsort is a
  stable merge sort, so ties keep input order). Walking that order, the first
  detection that claims a truth is a TP; a later one that claims the same truth,
  or one with no truth, is a FP. Precision and recall are doubles.
- ``points=0``: area under the monotone (non-increasing from the right) precision
  envelope over every distinct recall; ``points=N``: mean over ``r = k/(N-1)`` of
  the largest precision at recall >= r (11 = VOC2007, 101 = COCO). Darknet is built
  with -Ofast (Makefile and CMake), so gcc computes ``r`` as ``k * (1.0/(N-1))``: e.g.
  3*0.1 = 0.30000000000000004, and a recall of exactly 0.3 does not reach point 3.
  This module does the same (checked against the -Ofast binary's output).
  mAP = mean AP over **all** classes, including those without truths.
- At ``conf_thresh`` (``-thresh``, default .25), per image in detection order: a
  detection with prob > conf_thresh is a TP if it matched a truth that no earlier
  detection of this image (of any prob) matched; otherwise a FP -- this includes
  detections dropped for hitting a difficult object. ``avg IoU`` is the float32
  sum of the TP IoUs divided by TP + FP.

IoU and the threshold comparisons run in float32 in Darknet's operation order
(box.c:box_iou), so boundary cases decide as they do in Darknet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..box import pairwise_iou
from ..errors import DarknetKDError, DataError

F32 = np.float32


def box_iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in ``a (n,4)`` with every box in ``b (m,4)`` (``cx,cy,w,h``) as a
    float32 numpy matrix, through the project's one IoU (darknet_kd.box.pairwise_iou,
    Darknet's box.c:box_iou in float32 and in its operation order)."""
    a = torch.from_numpy(np.ascontiguousarray(a, F32).reshape(-1, 4))
    b = torch.from_numpy(np.ascontiguousarray(b, F32).reshape(-1, 4))
    return pairwise_iou(a, b).numpy()


def _c(fmt: str, x: float) -> str:
    """printf of one float as glibc on x86-64 prints it: 0/0 is the 'default NaN',
    which has its sign bit set and prints as ``-nan``."""
    return "-nan" if math.isnan(x) else fmt % x


@dataclass
class MapResult:
    """Everything validate_detector_map prints, plus the PR data behind it."""

    num_classes: int
    iou_thresh: float
    points: int
    conf_thresh: float
    ap: np.ndarray                 # (C,) float64, AP per class in [0, 1]
    map: float                     # mean of ap over all classes
    truth_count: np.ndarray        # (C,) int, ground truths per class
    detection_count: np.ndarray    # (C,) int, ranked detections per class
    tp_thresh: np.ndarray          # (C,) int, TP at conf_thresh (Darknet's "TP =" per class)
    fp_thresh: np.ndarray          # (C,) int, FP at conf_thresh
    avg_iou_class: np.ndarray      # (C,) float32, ΣIoU_TP/(TP+FP) per class
    tp: int                        # totals at conf_thresh
    fp: int
    fn: int
    precision: float               # float32 values, NaN where Darknet divides 0 by 0
    recall: float
    f1: float
    avg_iou: float
    detections_count: int          # all ranked detections (Darknet's detections_count)
    unique_truth_count: int
    best_thresh: float = math.nan  # the score threshold of the highest F1 (all classes pooled); NaN: none
    best_f1: float = 0.0
    names: list[str] | None = field(default=None)

    def _names(self, names=None) -> list[str]:
        names = names if names is not None else self.names
        if names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise DarknetKDError(f"{len(names)} names given for {self.num_classes} classes")
        return list(names)

    def format_report(self, names=None) -> str:
        """The lines ``darknet detector map`` prints, with its printf formats."""
        names = self._names(names)
        out = [f"\n detections_count = {self.detections_count}, "
               f"unique_truth_count = {self.unique_truth_count}  \n"]
        for i in range(self.num_classes):
            out.append("class_id = %d, name = %s, ap = %2.2f%%   \t (TP = %d, FP = %d) \n"
                       % (i, names[i], float(self.ap[i]) * 100, self.tp_thresh[i], self.fp_thresh[i]))
        ct = self.conf_thresh
        out.append("\n for conf_thresh = %1.2f, precision = %s, recall = %s, F1-score = %s \n"
                   % (ct, _c("%1.2f", self.precision), _c("%1.2f", self.recall), _c("%1.2f", self.f1)))
        avg_iou_pct = float(F32(self.avg_iou) * F32(100))  # float * int in C stays float
        out.append(" for conf_thresh = %0.2f, TP = %d, FP = %d, FN = %d, average IoU = %s %% \n"
                   % (ct, self.tp, self.fp, self.fn, _c("%2.2f", avg_iou_pct)))
        out.append("\n IoU threshold = %2.0f %%, " % float(F32(self.iou_thresh) * F32(100)))
        out.append(f"used {self.points} Recall-points \n" if self.points
                   else "used Area-Under-Curve for each unique Recall \n")
        out.append(" mean average precision (mAP@%0.2f) = %f, or %2.2f %% \n"
                   % (float(F32(self.iou_thresh)), self.map, self.map * 100))
        return "".join(out)

    def to_dict(self, names=None) -> dict:
        """A JSON-ready summary: settings, totals and one row per class (NaN -> None)."""
        names = self._names(names)

        def num(x):
            x = float(x)
            return None if math.isnan(x) else x

        return {
            "iou_thresh": num(F32(self.iou_thresh)),
            "points": self.points,
            "conf_thresh": num(F32(self.conf_thresh)),
            "map": self.map,
            "precision": num(self.precision), "recall": num(self.recall), "f1": num(self.f1),
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "average_iou": num(self.avg_iou),
            "detections_count": self.detections_count,
            "unique_truth_count": self.unique_truth_count,
            "best_f1": self.best_f1, "best_f1_thresh": num(self.best_thresh),
            "classes": [
                {"class_id": i, "name": names[i], "ap": float(self.ap[i]),
                 "truths": int(self.truth_count[i]), "detections": int(self.detection_count[i]),
                 "tp": int(self.tp_thresh[i]), "fp": int(self.fp_thresh[i]),
                 "average_iou": num(self.avg_iou_class[i])}
                for i in range(self.num_classes)],
        }

    def to_markdown(self, names=None) -> str:
        """A Markdown table of per-class AP with the totals underneath."""
        names = self._names(names)
        head = f"AP@{float(F32(self.iou_thresh)):.2f}" + (f" ({self.points} pts)" if self.points else "")
        rows = [f"| class | name | {head} | truths | TP@{self.conf_thresh:.2f} | FP@{self.conf_thresh:.2f} |",
                "|---:|---|---:|---:|---:|---:|"]
        for i in range(self.num_classes):
            rows.append(f"| {i} | {names[i]} | {self.ap[i] * 100:.2f} | {self.truth_count[i]} "
                        f"| {self.tp_thresh[i]} | {self.fp_thresh[i]} |")
        rows.append(f"| | **mAP** | **{self.map * 100:.2f}** | {self.unique_truth_count} "
                    f"| {self.tp} | {self.fp} |")
        return "\n".join(rows) + "\n"


def detection_pairs(d, num_classes: int, source=None):
    """``(boxes, det, cls, prob)`` from one image's detections ``d``: ``(boxes, probs)``
    with dense ``probs (n, C)`` or ``(boxes, classes, scores)``. ``det, cls, prob`` list
    every det x class with prob > 0 in Darknet's visiting order (det-major,
    class-minor; pairs in the given order); boxes stay ``(n, 4)`` float32."""
    if len(d) not in (2, 3):
        raise DarknetKDError("detections must be (boxes, probs) or (boxes, classes, scores)", source)
    boxes = np.asarray(d[0], F32).reshape(-1, 4)
    n = len(boxes)
    if len(d) == 2:
        probs = np.asarray(d[1], F32).reshape(n, -1) if n else np.zeros((0, num_classes), F32)
        if probs.shape[1] != num_classes:
            raise DarknetKDError(f"probs has {probs.shape[1]} classes, expected {num_classes}", source)
        finite = np.isfinite(probs).all()
        det, cls = np.nonzero(probs > 0)  # row-major: det-major, class-minor
        prob = probs[det, cls]
    else:
        classes = np.asarray(d[1]).reshape(-1)
        scores = np.asarray(d[2], F32).reshape(-1)
        if not (len(classes) == len(scores) == n):
            raise DarknetKDError(f"{n} boxes, {len(classes)} classes, {len(scores)} scores", source)
        if n and ((classes < 0).any() or (classes >= num_classes).any() or (classes != np.floor(classes)).any()):
            raise DarknetKDError(f"detection class ids must be integers in [0, {num_classes})", source)
        finite = np.isfinite(scores).all()
        det = np.nonzero(scores > 0)[0]
        cls, prob = classes[det].astype(np.int64), scores[det]
    if not (finite and np.isfinite(boxes).all()):
        raise DarknetKDError("detections contain NaN or infinite values", source)
    return boxes, det, cls.astype(np.int64), prob


class DarknetMap:
    """Accumulates images, then ``result(points)`` gives Darknet's mAP and report.

    ``iou_thresh`` is Darknet's ``-iou_thresh`` (a match needs IoU strictly
    greater), ``conf_thresh`` its ``-thresh`` (for the TP/FP/precision/recall line).
    """

    def __init__(self, num_classes: int, iou_thresh: float = 0.5, conf_thresh: float = 0.25):
        if num_classes < 1:
            raise DarknetKDError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= iou_thresh < 1.0:
            raise DarknetKDError(f"iou_thresh must be in [0, 1), got {iou_thresh}")
        self.num_classes = int(num_classes)
        self.iou_thresh = F32(iou_thresh)
        self.conf_thresh = F32(conf_thresh)
        self._prob: list[np.ndarray] = []
        self._cls: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []
        self._truth_count = np.zeros(self.num_classes, np.int64)
        self._n_truth = 0
        self._n_images = 0
        self._tp = np.zeros(self.num_classes, np.int64)
        self._fp = np.zeros(self.num_classes, np.int64)
        self._iou_sum = F32(0)
        self._iou_sum_class = np.zeros(self.num_classes, F32)

    # -- input ---------------------------------------------------------------
    def _truths(self, truths, what: str, source) -> np.ndarray:
        t = np.asarray(truths if truths is not None else np.zeros((0, 5)), dtype=np.float64)
        if t.size == 0:
            return np.zeros((0, 5), np.float64)
        if t.ndim != 2 or t.shape[1] != 5:
            raise DataError(f"{what} must be rows of 'class cx cy w h', got shape {t.shape}", source)
        bad = ~np.isfinite(t).all(axis=1) | (t[:, 0] != np.floor(t[:, 0])) \
            | (t[:, 0] < 0) | (t[:, 0] >= self.num_classes)
        if bad.any():
            k = int(np.argmax(bad))
            raise DataError(f"{what} object #{k}: {t[k].tolist()} is not 'class cx cy w h' with "
                            f"an integer class in [0, {self.num_classes})", source)
        return t

    def add_image(self, boxes, probs, truths, difficult=None, source=None) -> None:
        """One image with Darknet's dense detections: ``probs (n, C)``; every entry
        > 0 is a ranked detection, visited det by det, class by class."""
        self._add(*detection_pairs((boxes, probs), self.num_classes, source), truths, difficult, source)

    def add_pairs(self, boxes, classes, scores, truths, difficult=None, source=None) -> None:
        """One image with one (class, score) per box, visited in the given order;
        scores <= 0 are not detections (as in Darknet)."""
        self._add(*detection_pairs((boxes, classes, scores), self.num_classes, source),
                  truths, difficult, source)

    def _add(self, boxes, det, cls, prob, truths, difficult, source) -> None:
        truths = self._truths(truths, "truth", source)
        diff = self._truths(difficult, "difficult truth", source)
        tcls = truths[:, 0].astype(np.int64)
        self._truth_count += np.bincount(tcls, minlength=self.num_classes)
        thr = self.iou_thresh

        # best same-class truth with IoU > thr, first one on ties (Darknet: strict '>')
        iou = box_iou_matrix(boxes, truths[:, 1:])[det]                    # (P, g)
        ok = (tcls[None, :] == cls[:, None]) & (iou > thr)
        hit = ok.any(axis=1)
        if truths.shape[0]:
            masked = np.where(ok, iou, F32(-1))
            j = masked.argmax(axis=1)
            max_iou = np.where(hit, masked[np.arange(len(det)), j], F32(0)).astype(F32)
        else:
            j, max_iou = np.zeros(len(det), np.int64), np.zeros(len(det), F32)
        tidx = np.where(hit, self._n_truth + j, -1)

        # unmatched detections that hit a same-class difficult object are dropped
        kept = np.ones(len(det), bool)
        if diff.shape[0] and len(det):
            diou = box_iou_matrix(boxes, diff[:, 1:])[det]
            on_diff = ((diff[:, 0].astype(np.int64)[None, :] == cls[:, None]) & (diou > thr)).any(axis=1)
            kept = hit | ~on_diff

        # TP/FP at conf_thresh: TP = matched and no earlier det of this image matched that truth
        first = np.zeros(len(det), bool)
        if hit.any():
            m = np.nonzero(hit)[0]
            _, at = np.unique(tidx[m], return_index=True)
            first[m[at]] = True
        above = prob > self.conf_thresh
        tp = above & first
        fp = above & ~first
        self._tp += np.bincount(cls[tp], minlength=self.num_classes)
        self._fp += np.bincount(cls[fp], minlength=self.num_classes)
        for k in np.nonzero(tp)[0]:  # float32 running sums, in Darknet's order
            self._iou_sum = F32(self._iou_sum + max_iou[k])
            self._iou_sum_class[cls[k]] = F32(self._iou_sum_class[cls[k]] + max_iou[k])

        self._prob.append(prob[kept])
        self._cls.append(cls[kept])
        self._truth.append(tidx[kept])
        self._n_truth += truths.shape[0]
        self._n_images += 1

    # -- output --------------------------------------------------------------
    def result(self, points: int = 0, names=None) -> MapResult:
        """Darknet's AP per class and mAP; ``points`` 0 (area under curve) or N >= 2."""
        if points < 0 or points == 1:
            raise DarknetKDError(f"points must be 0 (area under curve) or >= 2, got {points}")
        C = self.num_classes
        prob = np.concatenate(self._prob) if self._prob else np.zeros(0, F32)
        cls = np.concatenate(self._cls) if self._cls else np.zeros(0, np.int64)
        tidx = np.concatenate(self._truth) if self._truth else np.zeros(0, np.int64)

        order = np.argsort(-prob, kind="stable")  # Darknet's qsort by p, descending
        cls, tidx = cls[order], tidx[order]
        # walking the ranks: the first claim of a truth is a TP, the rest are FP
        is_tp = np.zeros(len(cls), bool)
        m = np.nonzero(tidx >= 0)[0]
        first = np.full(max(self._n_truth, 1), len(cls), np.int64)
        np.minimum.at(first, tidx[m], m)            # first rank claiming each truth
        is_tp[first[first < len(cls)]] = True
        best_thresh, best_f1 = best_f1_threshold(prob[order], is_tp, self._n_truth)

        by_class = np.argsort(cls.astype(np.int16 if C < 2**15 else np.int32), kind="stable")  # radix sort
        counts = np.bincount(cls, minlength=C)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        ap = np.zeros(C, np.float64)
        for c in range(C):
            own = is_tp[by_class[bounds[c]:bounds[c + 1]]]
            ap[c] = _average_precision(own, int(self._truth_count[c]), points)
        mean_ap = 0.0
        for c in range(C):
            mean_ap += float(ap[c])
        mean_ap /= C

        tp, fp = int(self._tp.sum()), int(self._fp.sum())
        n_truth = int(self._truth_count.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = F32(tp) / (F32(tp) + F32(fp))
            recall = F32(tp) / (F32(tp) + F32(n_truth - tp))
            f1 = F32(2) * precision * recall / (precision + recall)
            avg_iou = self._iou_sum / F32(tp + fp) if tp + fp > 0 else self._iou_sum
            n = self._tp + self._fp
            avg_iou_class = np.where(n > 0, self._iou_sum_class / np.maximum(n, 1).astype(F32),
                                     self._iou_sum_class).astype(F32)
        return MapResult(
            num_classes=C, iou_thresh=float(self.iou_thresh), points=int(points),
            conf_thresh=float(self.conf_thresh), ap=ap, map=mean_ap,
            truth_count=self._truth_count.copy(), detection_count=counts,
            tp_thresh=self._tp.copy(), fp_thresh=self._fp.copy(), avg_iou_class=avg_iou_class,
            tp=tp, fp=fp, fn=n_truth - tp, precision=float(precision), recall=float(recall),
            f1=float(f1), avg_iou=float(avg_iou), detections_count=int(len(prob)),
            unique_truth_count=n_truth, best_thresh=best_thresh, best_f1=best_f1,
            names=list(names) if names is not None else None)


def best_f1_threshold(prob: np.ndarray, is_tp: np.ndarray, n_truth: int) -> tuple[float, float]:
    """The score threshold t whose detections (score >= t, all classes pooled) have the highest
    F1, from the ranked detections (``prob`` descending, ``is_tp`` the first claim of a truth);
    a threshold is a score where the next rank drops below it (ties stay together).  The
    highest t wins a tie in F1.  (nan, 0.0) without true positives."""
    if n_truth == 0 or not is_tp.any():
        return math.nan, 0.0
    tp = np.cumsum(is_tp)
    k = np.arange(1, len(prob) + 1)
    f1 = 2.0 * tp / (k + n_truth)  # 2PR/(P+R) with P = tp/k, R = tp/n_truth
    last = np.r_[prob[1:] != prob[:-1], True]  # a cut is possible only after the last of a tie
    f1 = np.where(last, f1, -1.0)
    i = int(np.argmax(f1))
    return float(prob[i]), float(f1[i])


def _average_precision(is_tp: np.ndarray, n_truth: int, points: int) -> float:
    """AP of one class from its detections' TP flags in rank order, as Darknet
    computes it from pr[class][rank] (detector.c, after the PR loop).

    Darknet walks all ranks of all classes; at ranks of other classes this class's
    precision/recall repeat their last value (0 before its first detection), which
    adds nothing, so only the class's own ranks matter. The sums run in Darknet's
    order (descending rank; point by point) so the double result is bit-identical.
    """
    m = len(is_tp)
    if m == 0:
        return 0.0
    ctp = np.cumsum(is_tp, dtype=np.int64)
    cfp = np.arange(1, m + 1) - ctp
    prec = ctp / (ctp + cfp).astype(np.float64)
    rec = ctp / float(n_truth) if n_truth > 0 else np.zeros(m)
    env = np.maximum.accumulate(prec[::-1])[::-1]  # env[j] = max(prec[j:])
    if points == 0:
        # step at rank j: (rec[j] - rec[j-1]) * max precision over ranks >= j-1
        prev_rec = np.concatenate([[0.0], rec[:-1]])
        weight = np.concatenate([[env[0]], env[:-1]])
        terms = (rec - prev_rec) * weight
        acc = 0.0
        for t in terms[::-1][terms[::-1] != 0]:
            acc += float(t)
        return acc
    acc = 0.0
    for p in range(points):
        r = p * (1.0 / (points - 1))
        k = int(np.searchsorted(rec, r, side="left"))  # first rank with recall >= r
        acc += float(env[k]) if k < m else 0.0
    return acc / points


def compute_map(detections, truths, num_classes: int, *, iou_thresh: float = 0.5, points: int = 0,
                conf_thresh: float = 0.25, difficult=None, names=None) -> MapResult:
    """Darknet's mAP for whole lists: ``detections[i]`` is ``(boxes, probs)`` (dense,
    probs ``(n, C)``) or ``(boxes, classes, scores)`` for image ``i``; ``truths[i]``
    its ``(g, 5)`` label rows; ``difficult[i]`` (optional) its difficult rows."""
    if len(detections) != len(truths) or (difficult is not None and len(difficult) != len(truths)):
        raise DarknetKDError(f"{len(detections)} detection lists for {len(truths)} truth lists"
                             + ("" if difficult is None else f" and {len(difficult)} difficult lists"))
    acc = DarknetMap(num_classes, iou_thresh, conf_thresh)
    for i, (d, t) in enumerate(zip(detections, truths)):
        src = f"image #{i}"
        acc._add(*detection_pairs(d, num_classes, src), t, None if difficult is None else difficult[i], src)
    return acc.result(points, names)
