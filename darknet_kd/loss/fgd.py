"""Focal and Global Distillation (Yang et al., CVPR 2022; yzd-v/FGD
``mmdet/distillation/losses/fgd.py``) on Darknet neck features.

Per hook level with student feature F_S (aligned to the teacher's channels by a 1×1 conv
when they differ) and teacher feature F_T, both (N, C, H, W):

* attention (:func:`attention`): spatial ``A^S = H·W·softmax_{HW}(mean_C |F| / T)``, channel
  ``A^C = C·softmax_C(mean_{HW} |F| / T)``, T = 0.5;
* masks (:func:`fgd_masks`) from the ground-truth boxes of each image, on the feature grid:
  a box covers rows ``floor(y1·H) .. ceil(y2·H)`` and columns ``floor(x1·W) .. ceil(x2·W)``
  (inclusive, as the reference slices ``[hmin:hmax+1]``) with value ``1/(rows·cols)``; the
  foreground mask is the maximum over boxes; the background mask is 1 outside all boxes,
  divided by the number of such pixels;
* ``L_fg = Σ M_fg·A^S_T·A^C_T·(F_T − F_S)²``, ``L_bg`` the same with M_bg (the teacher's
  attention on both sides);
* ``L_mask = Σ|A^C_S − A^C_T| + Σ|A^S_S − A^S_T|``;
* ``L_global = Σ ((F_S + GC_S(F_S)) − (F_T + GC_T(F_T)))²`` with a GcBlock per side
  (:class:`GcBlock`: softmax spatial pooling → 1×1 conv C→C/2 → LayerNorm → ReLU → 1×1 conv
  C/2→C, the last conv zero-initialised), both trainable (the teacher network stays frozen);
* total ``α·L_fg + β·L_bg + γ·L_mask + λ·L_global``, summed over levels.

The reference divides every sum by the batch size N (a per-image loss); here the sums run
over the mini-batch and the trainer divides by ``batch``, which is the same.  Defaults are
FGD's YOLOX setting (``fgd_yoloxl_distill_yoloxm_coco.py``): α 2e-3, β 1e-3, γ 1e-3,
λ 1e-5.  Alignment convs and GcBlocks are training-only (dropped at export).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fitnet import Adapter, check_pairs


def attention(feat: torch.Tensor, temperature: float = 0.5):
    """(N, C, H, W) -> spatial attention (N, H, W) summing to H·W per image, channel
    attention (N, C) summing to C per image."""
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = value.mean(1).view(n, -1)
    s_att = (h * w * F.softmax(spatial / temperature, dim=1)).view(n, h, w)
    c_att = c * F.softmax(value.mean((2, 3)) / temperature, dim=1)
    return s_att, c_att


def fgd_masks(targets: torch.Tensor, batch: int, h: int, w: int):
    """Foreground and background masks (batch, h, w) from target rows
    ``[image, class, cx, cy, w, h]`` (relative to the network input), as FGD builds them."""
    dev = targets.device
    fg = torch.zeros(batch, h, w, device=dev)
    if len(targets):
        t = targets.float()
        x1, x2 = (t[:, 2] - t[:, 4] / 2) * w, (t[:, 2] + t[:, 4] / 2) * w
        y1, y2 = (t[:, 3] - t[:, 5] / 2) * h, (t[:, 3] + t[:, 5] / 2) * h
        wmin, wmax = torch.floor(x1), torch.ceil(x2)
        hmin, hmax = torch.floor(y1), torch.ceil(y2)
        area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
        rows = torch.arange(h, device=dev, dtype=torch.float32)
        cols = torch.arange(w, device=dev, dtype=torch.float32)
        inside = (((rows[None, :] >= hmin[:, None]) & (rows[None, :] <= hmax[:, None]))[:, :, None]
                  & ((cols[None, :] >= wmin[:, None]) & (cols[None, :] <= wmax[:, None]))[:, None, :])
        val = inside.float() * area[:, None, None]                          # (M, h, w)
        b = t[:, 0].long()
        fg = fg.view(batch, -1).scatter_reduce(0, b[:, None].expand(-1, h * w), val.view(-1, h * w), "amax",
                                               include_self=True).view(batch, h, w)
    bg = (fg <= 0).float()
    n_bg = bg.sum((1, 2), keepdim=True)
    bg = torch.where(n_bg > 0, bg / n_bg.clamp(min=1), bg)
    return fg, bg


class GcBlock(nn.Module):
    """GCNet context block as FGD uses it: ``x + transform(softmax-pooled context)``."""

    def __init__(self, channels: int):
        super().__init__()
        mid = max(channels // 2, 1)
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.LayerNorm([mid, 1, 1]), nn.ReLU(),
                                       nn.Conv2d(mid, channels, 1))
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.transform[-1].weight)   # FGD: last_zero_init
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x):
        n, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).view(n, 1, h * w), dim=2)      # (n, 1, hw)
        context = torch.bmm(x.view(n, c, h * w), weights.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)


def fgd_level(s: torch.Tensor, t: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, temperature: float = 0.5):
    """The four FGD sums of one level (over the mini-batch): fg, bg, mask; ``s`` is the
    aligned student feature, ``t`` the teacher's (no gradient)."""
    s_sp, s_ch = attention(s, temperature)
    t_sp, t_ch = attention(t, temperature)
    att = t_sp[:, None] * t_ch[:, :, None, None]                            # (N, C, H, W)
    sq = (t - s) ** 2 * att
    l_fg = (sq * fg[:, None]).sum()
    l_bg = (sq * bg[:, None]).sum()
    l_mask = (s_ch - t_ch).abs().sum() + (s_sp - t_sp).abs().sum()
    return l_fg, l_bg, l_mask


class FGDLoss(nn.Module):
    def __init__(self, s_channels, t_channels, alpha: float = 2e-3, beta: float = 1e-3, gamma: float = 1e-3,
                 lam: float = 1e-5, temperature: float = 0.5):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.lam, self.temperature = alpha, beta, gamma, lam, temperature
        self.align = nn.ModuleList(Adapter(cs, ct, bn=False) if cs != ct else nn.Identity()
                                   for cs, ct in zip(s_channels, t_channels))
        self.gc_s = nn.ModuleList(GcBlock(ct) for ct in t_channels)
        self.gc_t = nn.ModuleList(GcBlock(ct) for ct in t_channels)

    def forward(self, s_feats, t_feats, targets, **_):
        check_pairs(s_feats, t_feats, "fgd")
        parts = {k: s_feats[0].new_zeros(()) for k in ("fg", "bg", "mask", "global")}
        for k, (s, t) in enumerate(zip(s_feats, t_feats)):
            s = self.align[k](s.float())
            t = t.detach().float()
            fg, bg = fgd_masks(targets, s.shape[0], s.shape[2], s.shape[3])
            l_fg, l_bg, l_mask = fgd_level(s, t, fg, bg, self.temperature)
            l_glob = ((self.gc_s[k](s) - self.gc_t[k](t)) ** 2).sum()
            parts["fg"] = parts["fg"] + self.alpha * l_fg
            parts["bg"] = parts["bg"] + self.beta * l_bg
            parts["mask"] = parts["mask"] + self.gamma * l_mask
            parts["global"] = parts["global"] + self.lam * l_glob
        loss = sum(parts.values())
        return loss, {k: v.detach() for k, v in parts.items()}
