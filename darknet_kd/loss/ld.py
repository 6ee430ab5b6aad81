"""Localization Distillation (Zheng et al., CVPR 2022; HikariTJU/LD) for Darknet [yolo] heads.

LD distils *box-edge distributions*: each of the four distances from an anchor point to
the box edges is predicted as ``reg_max + 1`` bin logits (GFL's distribution focal loss
head) and the student matches the teacher's softened bins:
``L_LD = T²·mean_bins KL(softmax(z_T/T) ‖ softmax(z_S/T))``, T = 10, averaged over the four
edges, on the positives of the assigner, each weighted by the student's detached score
(LD ``losses/kd_loss.py``, ``ld_gfl_head.py``); plus class KD on the same positives:
``T²·mean_classes KL`` of the softmaxed class logits, T = 2, weight 10 (LD's GFL config).

**Where the distribution comes from.**  A Darknet [yolo] head predicts one box (x, y, w, h),
not a distribution.  LD's way (``retina_gfl_head.py``) is to add a distribution branch to
teacher and student.  Here it is an *auxiliary head* (:class:`DistributionHead`): a 1×1
conv on the neck feature that feeds the [yolo] head conv (the distiller's hook layer),
predicting ``A × 4 × (reg_max+1)`` logits per cell (one distribution per anchor, so it
follows YOLO's (cell, anchor) assignment).  It is *not* part of the Darknet network:

- the student's branch is trained with the DFL on the ground truth (GFL's loss_dfl, weight
  0.25; weighted 1 per positive instead of GFL's student score, so that a student trained
  from scratch learns its branch from the start) plus LD from the teacher; its gradient
  reaches the student's backbone through the shared neck feature, which is how LD
  improves the Darknet head;
- the teacher's branch is fitted by ``darknet-kd distill --kd ld`` before distillation
  starts: the teacher stays frozen and only its 1×1 conv learns the DFL on the training
  labels (a linear probe of the teacher's features; ``--ld-teacher-iters``);
- both branches are saved in the distiller's checkpoint, never in ``.weights``: the
  teacher and the exported student stay plain Darknet cfg/weights that Darknet and
  OpenCV load unchanged.  No [yolo] cfg option is added for this reason.

Distances are in grid cells of the level, from the centre of the responsible cell to the
truth's left, top, right and bottom edges, clipped to ``[0, reg_max − 0.01]`` (GFL).  With
reg_max = 16 a level covers boxes up to 32 cells wide: the whole image for the strides of
the DriveSim cfgs.

Positives are Darknet's (yolo_layer.c:process_batch): the truth's centre cell, its best
anchor by shape IoU over all anchors of the layer, if that anchor is in the layer's mask.
LD's "valuable localization region" (ATSS candidates of medium IoU) is not implemented.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import box as B
from .. import ops


def yolo_positives(layer, targets: torch.Tensor, h: int, w: int, net_hw):
    """Darknet's responsible (image, mask position, row, col) for every target row
    ``[image, class, cx, cy, w, h]`` on a [yolo] layer with an ``h × w`` grid; returns
    ``(image, anchor, row, col, target row index)`` long tensors of the kept rows."""
    dev = targets.device
    t = targets.float()
    net_h, net_w = net_hw
    anchors = torch.tensor(layer.anchors, dtype=torch.float32, device=dev) / torch.tensor(
        [float(net_w), float(net_h)], device=dev)
    zeros = torch.zeros(len(t), 2, device=dev)
    best = B.pairwise_iou(torch.cat([zeros, t[:, 4:6]], 1),
                          torch.cat([torch.zeros_like(anchors), anchors], 1)).argmax(1) if len(t) else \
        torch.zeros(0, dtype=torch.long, device=dev)
    lut = torch.full((len(layer.anchors),), -1, dtype=torch.long, device=dev)
    for a in reversed(range(len(layer.mask))):
        lut[layer.mask[a]] = a
    a_idx = lut[best]
    keep = (a_idx >= 0).nonzero().view(-1)
    col = (t[keep, 2] * w).long().clamp(0, w - 1)
    row = (t[keep, 3] * h).long().clamp(0, h - 1)
    return t[keep, 0].long(), a_idx[keep], row, col, keep


def edge_distances(boxes: torch.Tensor, row, col, h: int, w: int, reg_max: int) -> torch.Tensor:
    """(P, 4) distances (left, top, right, bottom) in grid cells from the centre of cell
    (row, col) to the edges of ``boxes`` (cx, cy, w, h relative), clipped to [0, reg_max − .01]."""
    px, py = (col.float() + 0.5) / w, (row.float() + 0.5) / h
    x1, x2 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 0] + boxes[:, 2] / 2
    y1, y2 = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 3] / 2
    d = torch.stack([(px - x1) * w, (py - y1) * h, (x2 - px) * w, (y2 - py) * h], 1)
    return d.clamp(0, reg_max - 0.01)


def dfl_loss(logits: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """GFL's distribution focal loss: (P, 4, R+1) logits, (P, 4) distances -> (P,) loss,
    the mean over the 4 edges of CE(left bin)·(right − d) + CE(right bin)·(d − left)."""
    left = dist.floor().long()
    right = left + 1
    wl, wr = right.float() - dist, dist - left.float()
    logp = F.log_softmax(logits.float(), -1)
    ce_l = -logp.gather(-1, left[..., None])[..., 0]
    ce_r = -logp.gather(-1, right.clamp(max=logits.shape[-1] - 1)[..., None])[..., 0]
    return (ce_l * wl + ce_r * wr).mean(-1)


class DistributionHead(nn.Module):
    """1×1 conv: neck feature (N, C, H, W) -> box-edge bin logits (N, A, 4, R+1, H, W)."""

    def __init__(self, channels: int, anchors: int, reg_max: int = 16):
        super().__init__()
        self.anchors, self.bins = anchors, reg_max + 1
        self.conv = nn.Conv2d(channels, anchors * 4 * self.bins, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        n, _, h, w = x.shape
        return self.conv(x.float()).view(n, self.anchors, 4, self.bins, h, w)


def _gather(t: torch.Tensor, b, a, row, col) -> torch.Tensor:
    """(N, A, ..., H, W)[b, a, ..., row, col] -> (P, ...)."""
    return t.movedim((-2, -1), (2, 3))[b, a, row, col]


class LDLoss(nn.Module):
    """LD + class KD + the student branch's DFL over level pairs.

    ``levels``: one dict per pair with ``s_layer``/``t_layer`` (the student's and teacher's
    [yolo] modules of that stride, with the same masked anchors) and ``s_head``/``t_head``
    (their positions in the head lists); ``s_channels``/``t_channels``: the hook features'
    widths.
    """

    def __init__(self, s_channels, t_channels, levels, reg_max: int = 16, temperature: float = 10.0,
                 ld_weight: float = 0.25, cls_weight: float = 10.0, cls_temperature: float = 2.0,
                 dfl_weight: float = 0.25):
        super().__init__()
        self.levels = levels
        self.reg_max, self.temperature, self.ld_weight = reg_max, temperature, ld_weight
        self.cls_weight, self.cls_temperature, self.dfl_weight = cls_weight, cls_temperature, dfl_weight
        self.s_dist = nn.ModuleList(DistributionHead(c, len(lv["s_layer"].mask), reg_max)
                                    for c, lv in zip(s_channels, levels))
        self.t_dist = nn.ModuleList(DistributionHead(c, len(lv["t_layer"].mask), reg_max)
                                    for c, lv in zip(t_channels, levels))

    def student_parameters(self):
        """What the student's optimiser trains: its branches (the teacher's are fitted by
        :meth:`teacher_fit_loss` with their own optimiser)."""
        return list(self.s_dist.parameters())

    def _positives(self, k, targets, h, w, net_hw):
        b, a, row, col, idx = yolo_positives(self.levels[k]["s_layer"], targets, h, w, net_hw)
        dist = edge_distances(targets[idx, 2:6].float(), row, col, h, w, self.reg_max)
        return b, a, row, col, dist

    def teacher_fit_loss(self, t_feats, targets, net_hw):
        """DFL of the teacher's branches on the ground truth (sum over positives); the
        teacher's features carry no gradient, only the branches learn."""
        total = t_feats[0].new_zeros((), dtype=torch.float32)
        for k, t in enumerate(t_feats):
            h, w = t.shape[-2:]
            b, a, row, col, dist = self._positives(k, targets, h, w, net_hw)
            if len(b):
                total = total + dfl_loss(_gather(self.t_dist[k](t.detach()), b, a, row, col), dist).sum()
        return total

    def forward(self, s_feats, t_feats, s_heads, t_heads, targets, net_hw, **_):
        zero = s_feats[0].new_zeros((), dtype=torch.float32)
        parts = {"ld": zero, "cls_kd": zero, "dfl": zero}
        for k, (s, t) in enumerate(zip(s_feats, t_feats)):
            lv = self.levels[k]
            h, w = s.shape[-2:]
            b, a, row, col, dist = self._positives(k, targets, h, w, net_hw)
            if not len(b):
                parts["dfl"] = parts["dfl"] + 0.0 * self.s_dist[k](s).sum()  # keep the branch in the graph
                continue
            s_bins = _gather(self.s_dist[k](s), b, a, row, col)                       # (P, 4, R+1)
            with torch.no_grad():
                t_bins = _gather(self.t_dist[k](t.detach()), b, a, row, col)
            C = lv["s_layer"].classes
            s_raw = _gather(s_heads[lv["s_head"]].float().view(s.shape[0], -1, 5 + C, h, w), b, a, row, col)
            t_raw = _gather(t_heads[lv["t_head"]].float().view(s.shape[0], -1, 5 + C, h, w), b, a, row, col)
            with torch.no_grad():   # LD's weight: the student's own (detached) score at the positive
                score = torch.sigmoid(s_raw[:, 4]) * torch.sigmoid(s_raw[:, 5:]).max(1).values
            bins = self.reg_max + 1
            ld = ops.kd_loss(s_bins.reshape(-1, bins).contiguous(), t_bins.reshape(-1, bins).contiguous(),
                             kind="kl", dim=1, temperature=self.temperature,
                             weight=(score / (4 * bins)).repeat_interleave(4).contiguous())
            cls = ops.kd_loss(s_raw[:, 5:].contiguous(), t_raw[:, 5:].contiguous(), kind="kl", dim=1,
                              temperature=self.cls_temperature,
                              weight=torch.full((len(b),), 1.0 / C, device=s.device))
            parts["ld"] = parts["ld"] + self.ld_weight * ld
            parts["cls_kd"] = parts["cls_kd"] + self.cls_weight * cls
            parts["dfl"] = parts["dfl"] + self.dfl_weight * dfl_loss(s_bins, dist).sum()
        return parts["ld"] + parts["cls_kd"] + parts["dfl"], {k: v.detach() for k, v in parts.items()}
