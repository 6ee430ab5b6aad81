"""The project's one box codec and IoU module (torch).

Boxes are ``(..., 4)`` tensors, either ``xywh`` (centre x, centre y, width, height:
Darknet's ``box`` and the label format) or ``xyxy`` (left, top, right, bottom).  The
IoU functions broadcast like any elementwise torch op, so ``iou(a, b)`` compares box k
of ``a`` with box k of ``b`` and ``pairwise_iou(a, b)`` gives the (N, M) matrix.

The IoU variants follow Darknet's src/box.c:

- ``iou``: intersection / union, 0 where either is 0 (box_iou).
- ``giou``: IoU − (C − U)/C with C the enclosing box's area; IoU where C = 0 (box_giou).
- ``diou``: IoU − (d²/c²)^beta with d the centre distance and c the enclosing box's
  diagonal; IoU where c = 0.  beta = 1 is the DIoU paper and Darknet's DIoU *gradient*;
  Darknet's box_diou (loss report, greedynms) uses beta = 0.6, diounms uses beta_nms.
- ``ciou``: IoU − (d²/c² + α·v), v = 4/π²·(atan(w_b/h_b) − atan(w_a/h_a))²,
  α = v / (1 − IoU + v + 1e-6); IoU where c = 0 (box_ciou).
"""
from __future__ import annotations

import math

import torch

KINDS = ("iou", "giou", "diou", "ciou")


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def iou(a: torch.Tensor, b: torch.Tensor, kind: str = "iou", fmt: str = "xywh",
        diou_beta: float = 1.0) -> torch.Tensor:
    """Elementwise (broadcasting) IoU of kind ``iou|giou|diou|ciou`` between ``a`` and ``b``."""
    if kind not in KINDS:
        raise ValueError(f"IoU kind {kind!r} is not one of {', '.join(KINDS)}")
    if fmt == "xywh":
        axy, bxy = xywh_to_xyxy(a), xywh_to_xyxy(b)
        aw, ah, bw, bh = a[..., 2], a[..., 3], b[..., 2], b[..., 3]
    elif fmt == "xyxy":
        axy, bxy = a, b
        aw, ah = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
        bw, bh = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    else:
        raise ValueError(f"box format {fmt!r} is not 'xywh' or 'xyxy'")
    lo = torch.maximum(axy[..., :2], bxy[..., :2])
    hi = torch.minimum(axy[..., 2:], bxy[..., 2:])
    wh = (hi - lo).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = aw * ah + bw * bh - inter
    ok = (inter != 0) & (union != 0)
    out = torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(inter))
    if kind == "iou":
        return out
    clo = torch.minimum(axy[..., :2], bxy[..., :2])
    chi = torch.maximum(axy[..., 2:], bxy[..., 2:])
    cwh = chi - clo
    if kind == "giou":
        c = cwh[..., 0] * cwh[..., 1]
        safe = torch.where(c != 0, c, torch.ones_like(c))
        return torch.where(c != 0, out - (c - union) / safe, out)
    c2 = (cwh ** 2).sum(-1)
    safe = torch.where(c2 != 0, c2, torch.ones_like(c2))
    ca, cb = (axy[..., :2] + axy[..., 2:]) / 2, (bxy[..., :2] + bxy[..., 2:]) / 2
    d2 = ((ca - cb) ** 2).sum(-1)
    if kind == "diou":
        return torch.where(c2 != 0, out - (d2 / safe) ** diou_beta, out)
    v = (4 / math.pi ** 2) * (torch.atan(bw / bh) - torch.atan(aw / ah)) ** 2
    alpha = v / (1 - out + v + 1e-6)
    return torch.where(c2 != 0, out - (d2 / safe + alpha * v), out)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "iou", fmt: str = "xywh",
                 diou_beta: float = 1.0) -> torch.Tensor:
    """(N, 4) × (M, 4) -> (N, M) IoU matrix (any leading batch dims before N and M)."""
    return iou(a.unsqueeze(-2), b.unsqueeze(-3), kind, fmt, diou_beta)
