"""CrossKD (Wang et al., CVPR 2024; jbwang1997/CrossKD) for Darknet [yolo] heads.

The student's neck feature (the distiller's hook layer, the input of a [yolo] head conv)
is aligned to the teacher's width by a 1×1 conv when the widths differ, renormalised per
channel (zero mean and unit std over N, H, W, then the teacher's feature's per-channel
mean and std: CrossKD ``align_scale``), and run through the *frozen teacher's* remaining
head layers (the convolutions between the teacher's hook layer and its [yolo] layer) —
the "cross-head" prediction.  The student's own head is trained by the detection loss
only; the KD compares cross-head and teacher predictions, as CrossKD's YOLO branch
(``crosskd_yolo.py``) does, per [yolo] layer, with p = the teacher's objectness σ(t_obj):

- objectness: quality-focal BCE ``BCE(s, σ(t))·|σ(s) − σ(t)|^β``, β = 1, at every cell
  and anchor (its positive + negative mask);
- classes and x, y (logistic offsets, new_coords=0): the same quality-focal BCE, weighted
  by p;
- w, h: ``2·p·(s − t)²`` (MSE weight 2).  With ``new_coords=1`` (x, y not logits) x, y use
  the MSE too.

The quality-focal BCE is the fused :func:`darknet_kd.ops.kd_loss` (``kind="qfl"``).
CrossKD normalises by the number of positives because mmdet's detection losses are
means; Darknet's [yolo] loss is a *sum* over cells per image, so these terms are sums too
(over cells and the mini-batch) and keep the reference's KD-to-detection ratio.
Gradients reach the student (through the teacher's head, whose parameters stay frozen)
and the alignment conv; the alignment convs are dropped at export.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import ops
from ..errors import DarknetKDError
from .fitnet import Adapter, check_pairs


def renormalize(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``s`` standardised per channel over (N, H, W), then given ``t``'s per-channel mean and
    std (unbiased, as torch.std; ``t`` is a constant)."""
    dims = (0, 2, 3)
    s_mean, s_std = s.mean(dims, keepdim=True), s.std(dims, keepdim=True)
    t = t.detach()
    t_mean, t_std = t.mean(dims, keepdim=True), t.std(dims, keepdim=True)
    return (s - s_mean) / (s_std + eps) * t_std + t_mean


def crosskd_head_loss(cross: torch.Tensor, teacher: torch.Tensor, layer, beta: float = 1.0,
                      wh_weight: float = 2.0) -> dict:
    """KD terms between a cross-head raw output and the teacher's raw [yolo] input, both
    (N, A·(5+C), H, W), for the [yolo] ``layer``; returns sums {obj, cls, xy, wh}."""
    n, _, h, w = cross.shape
    C = layer.classes
    s = cross.float().view(n, -1, 5 + C, h, w)
    t = teacher.detach().float().view(n, -1, 5 + C, h, w)
    p = torch.sigmoid(t[:, :, 4]).contiguous()                               # (N, A, H, W)
    out = {"obj": ops.kd_loss(s[:, :, 4:5].contiguous(), t[:, :, 4:5].contiguous(), kind="qfl", dim=2, beta=beta),
           "cls": ops.kd_loss(s[:, :, 5:].contiguous(), t[:, :, 5:].contiguous(), kind="qfl", dim=2, beta=beta,
                              weight=p)}
    if layer.new_coords:
        out["xy"] = wh_weight * (p[:, :, None] * (s[:, :, 0:2] - t[:, :, 0:2]) ** 2).sum()
    else:
        out["xy"] = ops.kd_loss(s[:, :, 0:2].contiguous(), t[:, :, 0:2].contiguous(), kind="qfl", dim=2,
                                beta=beta, weight=p)
    out["wh"] = wh_weight * (p[:, :, None] * (s[:, :, 2:4] - t[:, :, 2:4]) ** 2).sum()
    return out


def teacher_head_chain(teacher, hook: int, yolo) -> list:
    """The teacher's layers after ``hook`` up to (not including) the [yolo] layer ``yolo``:
    they must be convolutions, each reading the previous layer's output."""
    from ..model.layers import Convolutional

    chain = [teacher.layers[k] for k in range(hook + 1, yolo.index)]
    for m in chain:
        if not isinstance(m, Convolutional):
            raise DarknetKDError(f"crosskd: teacher layer {m.index} ({m.kind}) lies between hook layer {hook} and "
                                 f"[yolo] layer {yolo.index}; the hook must feed the head through convolutions only "
                                 "(use the input of the head conv, the default)")
    if not chain:
        raise DarknetKDError(f"crosskd: teacher hook layer {hook} is the [yolo] input itself; "
                             "pick a layer before the head conv")
    return chain


class CrossKDLoss(nn.Module):
    """``levels``: one dict per hook pair with ``t_layer`` (the teacher's [yolo] module fed by
    the teacher hook), ``t_head`` (its position in the teacher's head list) and ``chain``
    (:func:`teacher_head_chain`)."""

    def __init__(self, s_channels, t_channels, levels, beta: float = 1.0, wh_weight: float = 2.0):
        super().__init__()
        self.levels = levels   # holds frozen teacher modules: a plain list, not registered here
        self.beta, self.wh_weight = beta, wh_weight
        self.align = nn.ModuleList(Adapter(cs, ct, bn=False) if cs != ct else nn.Identity()
                                   for cs, ct in zip(s_channels, t_channels))

    def cross_head(self, k: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = renormalize(self.align[k](s.float()), t.float())
        for m in self.levels[k]["chain"]:
            x = m(x)
        return x

    def forward(self, s_feats, t_feats, t_heads, **_):
        check_pairs(s_feats, t_feats, "crosskd")
        parts = {k: s_feats[0].new_zeros((), dtype=torch.float32) for k in ("obj", "cls", "xy", "wh")}
        for k, (s, t) in enumerate(zip(s_feats, t_feats)):
            lv = self.levels[k]
            terms = crosskd_head_loss(self.cross_head(k, s, t), t_heads[lv["t_head"]], lv["t_layer"], self.beta,
                                      self.wh_weight)
            for name, v in terms.items():
                parts[name] = parts[name] + v
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
