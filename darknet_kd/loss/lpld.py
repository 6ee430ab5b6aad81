"""Low-confidence pseudo-label distillation (LPLD, ECCV 2024) for Darknet YOLO.

The published method (its code: detectron2/modeling/meta_arch/student_sfda_rcnn.py) is for
Faster R-CNN.  Each of its pieces and the YOLO analogue used here:

* **High-confidence pseudo-labels (HPL)** — the teacher's final detections with score
  > 0.7.  Here: the teacher's decoded rows through the project's detection pipeline
  (:func:`darknet_kd.eval.evaluate.detect_batch`: objectness > 0.005, per-class score
  ``objectness · class prob``, Darknet's per-class NMS 0.45 of the last [yolo] nms_kind),
  every surviving (row, class) pair with score > ``hpl_thresh``.  They are the targets of
  the student's ordinary [yolo] loss.
* **Proposals** — Faster R-CNN's RPN proposals (post-NMS top 300).  A YOLO head has no
  separate proposal stage; its pre-NMS rows *are* class-agnostic proposals scored by
  objectness.  Here: the teacher's rows, class-agnostic NMS at ``proposal_nms`` (0.7, the
  RPN's) on objectness through :func:`darknet_kd.ops.nms`, the top ``top_k`` (300).
* **Overlap filter** — kept when the max IoU with the image's HPL is ≤ 0.4; an image
  without HPL gets no LPLD loss (as published).
* **Class-relation filter** — Faster R-CNN keeps a proposal when the softmax over its
  foreground logits has max ≥ 0.9 and the background probability of the full softmax is
  ≤ 0.99.  A YOLO cell factorises the same quantities: P(object) = objectness and the class
  distribution *given* an object.  Background probability := ``1 − objectness``; the
  foreground class distribution := the per-class sigmoid probabilities renormalised,
  ``q_c = σ(z_c) / Σ_k σ(z_k)``.  Kept when ``1 − obj ≤ 0.99`` and ``max_c q_c ≥ 0.9``.
* **Loss** — ``KL(p_t ‖ p_s)`` over C+1 outcomes at each kept cell (the *same* layer,
  anchor and grid cell in the student's output: the two views share the geometry):
  ``p_t = [q_t, 1e-9]`` (the teacher's foreground distribution with a 1e-9 background
  entry, as published) and ``p_s = [σ(o_s)·q_s, 1 − σ(o_s)]`` (the student's factorised
  C+1 distribution).  Computed through the fused :func:`darknet_kd.ops.kd_loss` on
  log-probabilities (softmax of log p is p).
* **Weight** — ``w_i = 1 − cos(f_s,i, f_t,i)``, detached, where f is the mean of a feature
  map over the box (the published RoI mean of res4; here a neck layer, by default the input
  of the finest [yolo] layer's output convolution, mean-pooled with an integral image).
* **Scale** — published: ``0.1 · (1/N) Σ_i w_i KL_i`` per image (batch 1).  The YOLO
  detection loss here is a *sum* over cells and images (Darknet's deltas), so
  ``norm="mean"`` adds ``0.1 · mean_i(w_i KL_i)`` per image and ``norm="sum"`` adds
  ``0.1 · Σ_i w_i KL_i`` (each LPL cell weighted like one detection cell); see
  :class:`LpldOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import box as B
from ..errors import DarknetKDError

__all__ = ["LpldOptions", "LplMining", "flatten_heads", "cell_log_probs", "decode_heads", "mine_hpl",
           "mine_lpl", "roi_mean_pool", "feature_weight", "lpld_kl", "hpl_targets", "default_feature_layer",
           "check_feature_layer", "teacher_pseudo_labels"]

BG_EPS = 1e-9  # the published teacher background entry


@dataclass
class LpldOptions:
    hpl_thresh: float = 0.7        # HPL: teacher score (obj · class prob) >
    top_k: int = 300               # proposals per image (RPN post-NMS top-N)
    proposal_nms: float = 0.7      # class-agnostic NMS of the proposals (the RPN's)
    max_hpl_iou: float = 0.4       # LPL: max IoU with any HPL <=
    fg_min: float = 0.9            # LPL: max of the foreground class distribution >=
    bg_max: float = 0.99           # LPL: background probability 1 - objectness <=
    weight: float = 0.1            # loss weight
    norm: str = "mean"             # "mean" over an image's LPL (published) or "sum"

    def check(self):
        if self.norm not in ("mean", "sum"):
            raise DarknetKDError(f"LPLD norm must be 'mean' or 'sum', not {self.norm!r}")
        if self.top_k < 1:
            raise DarknetKDError(f"LPLD top_k must be >= 1, got {self.top_k}")
        return self


# ------------------------------------------------------------------------------ head layout

def _flat(layer, head: torch.Tensor) -> torch.Tensor:
    b, _, hh, ww = head.shape
    na = len(layer.mask)
    return head.view(b, na, layer.classes + 5, hh, ww).permute(0, 1, 3, 4, 2).reshape(b, na * hh * ww, -1)


def flatten_heads(model, heads) -> torch.Tensor:
    """Raw training-mode heads -> (B, N, 5+C) raw values in the decoded rows' order
    (yolo layer, anchor, row, col), per-row channels x, y, w, h, obj, classes."""
    return torch.cat([_flat(layer, h) for layer, h in zip(model.yolo_layers, heads)], 1)


def cell_log_probs(model, heads):
    """(log σ(obj), log(1 − σ(obj)), log σ(classes)) of every row, (B, N), (B, N), (B, N, C),
    from raw heads; with new_coords=1 the head already holds probabilities (the conv before
    is logistic), clamped away from 0 and 1."""
    obj_lp, obj_l1mp, cls_lp = [], [], []
    for layer, h in zip(model.yolo_layers, heads):
        rows = _flat(layer, h).float()
        o, z = rows[..., 4], rows[..., 5:]
        if layer.new_coords:
            o, z = o.clamp(1e-7, 1 - 1e-7), z.clamp(1e-7, 1 - 1e-7)
            obj_lp.append(o.log()), obj_l1mp.append((-o).log1p()), cls_lp.append(z.log())
        else:
            obj_lp.append(F.logsigmoid(o)), obj_l1mp.append(F.logsigmoid(-o)), cls_lp.append(F.logsigmoid(z))
    return torch.cat(obj_lp, 1), torch.cat(obj_l1mp, 1), torch.cat(cls_lp, 1)


def decode_heads(model, heads, net_hw) -> torch.Tensor:
    """Raw heads -> the eval-mode decoded rows (B, N, 5+C) (cx, cy, w, h relative to the
    input, objectness, class probabilities), as ``model.eval()(x)`` would return them."""
    return torch.cat([layer.decode(h, net_hw) for layer, h in zip(model.yolo_layers, heads)], 1)


# ------------------------------------------------------------------------------ mining

class _Decoded:
    """Hands already-decoded rows to detect_batch (which calls ``model(images)``), so the
    teacher runs once for HPL, proposals and features."""

    def __init__(self, rows, yolo_layers):
        self.rows, self.yolo_layers = rows, yolo_layers

    def __call__(self, images):
        return self.rows


def mine_hpl(model, decoded: torch.Tensor, thresh: float = 0.7):
    """High-confidence pseudo-labels of each image: a list of (boxes (n, 4) xywh relative to
    the network input, float32 tensor; classes (n,) int64), from the teacher's decoded rows
    (B, N, 5+C) through Darknet's detection pipeline (detect_batch: thresholds + per-class
    NMS); a (row, class) pair is an HPL when its score obj·prob > ``thresh``."""
    from ..eval.evaluate import detect_batch

    b, n = decoded.shape[:2]
    infos = [{} for _ in range(b)]
    # Row positions only order ties among equal scores; any order serves pseudo-labels.
    dets = detect_batch(_Decoded(decoded, model.yolo_layers), decoded, infos, np.arange(n))
    out = []
    for boxes, probs in dets:
        r, c = np.nonzero(probs > thresh)
        out.append((torch.from_numpy(np.ascontiguousarray(boxes[r], dtype=np.float32)).to(decoded.device),
                    torch.from_numpy(c.astype(np.int64)).to(decoded.device)))
    return out


class LplMining(NamedTuple):
    """LPL mining of one image.  ``proposals``: rows kept as proposals (after the objectness
    floor, class-agnostic NMS and top-k), by objectness descending; the masks are parallel to
    ``proposals``: ``low_overlap`` (max IoU with HPL ≤ max_hpl_iou; all False without HPL),
    ``class_ok`` (the class-relation filter); ``index`` = proposals[low_overlap & class_ok]."""
    proposals: torch.Tensor
    low_overlap: torch.Tensor
    class_ok: torch.Tensor
    index: torch.Tensor


def fg_distribution(cls_prob: torch.Tensor) -> torch.Tensor:
    """The foreground class distribution of YOLO cells: sigmoid class probabilities renormalised."""
    return cls_prob / cls_prob.sum(-1, keepdim=True).clamp_min(1e-12)


def mine_lpl(rows: torch.Tensor, hpl_boxes: torch.Tensor, opts: LpldOptions = LpldOptions()) -> LplMining:
    """Low-confidence pseudo-labels of one image from the teacher's decoded rows (N, 5+C)
    and the image's HPL boxes (M, 4) xywh: see the module docstring for each filter."""
    from .. import ops

    dev = rows.device
    obj = rows[:, 4].float().contiguous()
    floor = torch.nonzero(1 - obj <= opts.bg_max, as_tuple=True)[0]
    if len(floor):
        keep = ops.nms(rows[floor, :4].float().contiguous(), obj[floor].contiguous(), opts.proposal_nms,
                       score_thresh=-1.0, max_det=opts.top_k)
        proposals = floor[keep.index]
    else:
        proposals = floor
    boxes = rows[proposals, :4].float()
    if len(hpl_boxes) and len(proposals):
        low = B.pairwise_iou(boxes, hpl_boxes.to(boxes)).max(1).values <= opts.max_hpl_iou
    else:
        low = torch.zeros(len(proposals), dtype=torch.bool, device=dev)
    q = fg_distribution(rows[proposals, 5:].float())
    class_ok = (q.max(-1).values >= opts.fg_min) & (1 - obj[proposals] <= opts.bg_max)
    return LplMining(proposals, low, class_ok, proposals[low & class_ok])


# ------------------------------------------------------------------------------ features

def roi_mean_pool(feat: torch.Tensor, batch: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mean of ``feat`` (B, C, H, W) over each box: (K,) image indices, (K, 4) xywh relative
    boxes -> (K, C).  The box covers the feature cells it touches (floor of the left/top
    edge, ceil of the right/bottom edge, clipped to the map, at least one cell); sums come
    from an integral image, so the cost does not grow with the box size."""
    b, c, h, w = feat.shape
    if len(boxes) == 0:
        return feat.new_zeros((0, c))
    x1, y1, x2, y2 = B.xywh_to_xyxy(boxes.float()).unbind(-1)
    c0 = (x1 * w).floor().clamp(0, w - 1).long()
    r0 = (y1 * h).floor().clamp(0, h - 1).long()
    c1 = torch.maximum((x2 * w).ceil().clamp(max=w).long(), c0 + 1)
    r1 = torch.maximum((y2 * h).ceil().clamp(max=h).long(), r0 + 1)
    s = F.pad(feat.double().cumsum(2).cumsum(3), (1, 0, 1, 0))  # (B, C, H+1, W+1)
    bi = batch.long()
    total = s[bi, :, r1, c1] - s[bi, :, r0, c1] - s[bi, :, r1, c0] + s[bi, :, r0, c0]
    return (total / ((r1 - r0) * (c1 - c0)).unsqueeze(1)).to(feat.dtype)


def feature_weight(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """LPLD's weight 1 − cos(f_s, f_t) per row, detached (a cell where the student already
    sees what the teacher sees needs little distillation)."""
    return (1 - F.cosine_similarity(f_s.detach().float(), f_t.detach().float(), dim=1, eps=1e-8))


def default_feature_layer(model) -> int:
    """The neck feature LPLD pools: the input of the output convolution of the finest
    [yolo] layer (the largest grid), i.e. layer ``yolo.index − 2``."""
    finest = max(model.yolo_layers, key=lambda y: y.in_shape.h * y.in_shape.w)
    return check_feature_layer(model, finest.index - 2)


def check_feature_layer(model, index: int) -> int:
    from ..model.layers import Yolo

    n = len(model.layers)
    if not 0 <= index < n or isinstance(model.layers[index], Yolo):
        raise DarknetKDError(f"feature layer {index} is not a layer with a feature map (layers 0..{n - 1}, "
                             "not a [yolo] layer)", model.path)
    return index


# ------------------------------------------------------------------------------ loss

def lpld_kl(obj_lp: torch.Tensor, obj_l1mp: torch.Tensor, cls_lp: torch.Tensor, teacher_cls_prob: torch.Tensor,
            weight: torch.Tensor) -> torch.Tensor:
    """``Σ_i w_i KL(p_t,i ‖ p_s,i)`` over K cells through ops.kd_loss.

    Student: log σ(o) (K,), log(1 − σ(o)) (K,), log σ(z) (K, C) (differentiable); teacher:
    its class probabilities σ(z_t) (K, C); weight (K,).  p_t = [q_t, 1e-9],
    p_s = [σ(o)·q_s, 1 − σ(o)] with q = renormalised class probabilities."""
    from .. import ops

    if len(obj_lp) == 0:
        return obj_lp.sum() * 0
    log_q_s = cls_lp - torch.logsumexp(cls_lp, -1, keepdim=True)
    student = torch.cat([obj_lp.unsqueeze(-1) + log_q_s, obj_l1mp.unsqueeze(-1)], -1).contiguous()
    q_t = fg_distribution(teacher_cls_prob.detach().to(student.dtype))
    teacher = torch.cat([q_t.clamp_min(1e-30).log(), torch.full_like(q_t[:, :1], np.log(BG_EPS))], -1).contiguous()
    return ops.kd_loss(student, teacher, kind="kl", dim=1, weight=weight.detach().to(student.dtype).contiguous())


def hpl_targets(hpl, net_hw) -> torch.Tensor:
    """HPL of a batch -> the detection loss's targets (M, 6) [b, cls, cx, cy, w, h]: boxes
    clipped to the image, below one network pixel dropped (fill_truth_detection's rule)."""
    net_h, net_w = net_hw
    rows = []
    for b, (boxes, cls) in enumerate(hpl):
        if len(boxes) == 0:
            continue
        xyxy = B.xywh_to_xyxy(boxes).clamp(0, 1)
        xywh = B.xyxy_to_xywh(xyxy)
        ok = (xywh[:, 2] >= 1.0 / net_w) & (xywh[:, 3] >= 1.0 / net_h)
        k = int(ok.sum())
        rows.append(torch.cat([torch.full((k, 1), float(b), device=boxes.device),
                               cls[ok].to(boxes.dtype).unsqueeze(1), xywh[ok]], 1))
    if not rows:
        return torch.zeros((0, 6))
    return torch.cat(rows).float()


@torch.no_grad()
def teacher_pseudo_labels(model, images: torch.Tensor, opts: LpldOptions = LpldOptions()):
    """HPL and LPL of a batch of images (B, 3, H, W) for a model in eval mode: per image a
    dict of ``hpl`` (boxes (n, 4) xywh relative to the input, classes (n,)) and ``lpl``
    (boxes, argmax classes of the teacher's foreground distribution) -- what one
    adaptation step mines, without augmentation (the pseudo-label audit); and ``rows``: every
    pre-NMS slot's box and score obj · max class prob (what the teacher sees at all)."""
    decoded = model(images)
    hpl = mine_hpl(model, decoded, opts.hpl_thresh)
    score = decoded[..., 4] * decoded[..., 5:].max(-1).values
    out = []
    for b, (boxes, cls) in enumerate(hpl):
        idx = mine_lpl(decoded[b], boxes, opts).index
        out.append({"hpl": (boxes, cls), "lpl": (decoded[b, idx, :4], decoded[b, idx, 5:].argmax(-1)),
                    "rows": (decoded[b, :, :4], score[b])})
    return out
