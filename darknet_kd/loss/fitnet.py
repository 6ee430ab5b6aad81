"""FitNets hint learning for a Darknet student (Romero et al., ICLR 2015).

``L = w · Σ_levels mean_{C,H,W} (r(F_S) − F_T)²`` per image, summed over the images of the
mini-batch (the trainer divides by ``batch``, as it does the Darknet loss), where ``r`` is
an adapter: a 1×1 conv + batch norm from the student's channels to the teacher's
(megvii-research/mdistiller ``distillers/_common.py`` ConvReg).  mdistiller follows the
BN with a ReLU; Darknet neck features are leaky-ReLU outputs with negative values, which
a ReLU could never match, so the adapter here ends at the BN.  Both networks' features
must have the same spatial size (pair hook layers of equal stride).

The adapters are training-only modules owned by the distiller: they are saved in the
checkpoint for resume and never written to the student's ``.weights`` (dropped at export,
as the FitNets YOLO recipe says).  mdistiller trains hints and the task loss at once (the
original paper trains hints first); so does ``darknet-kd distill --kd fitnet``.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import DarknetKDError


class Adapter(nn.Module):
    """1×1 conv (no bias) + BatchNorm from ``cin`` to ``cout`` channels; with ``bn=False`` a
    plain 1×1 conv with bias (FGD's and CrossKD's channel alignment)."""

    def __init__(self, cin: int, cout: int, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))


def check_pairs(s_feats, t_feats, what: str) -> None:
    """Student and teacher features must pair up one-to-one with equal batch and H×W."""
    if len(s_feats) != len(t_feats):
        raise DarknetKDError(f"{what}: {len(s_feats)} student feature layers but {len(t_feats)} teacher layers")
    for k, (s, t) in enumerate(zip(s_feats, t_feats)):
        if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
            raise DarknetKDError(f"{what}: hook pair {k} has student feature {tuple(s.shape)} and teacher "
                                 f"feature {tuple(t.shape)}: pick layers of the same stride")


class FitNetLoss(nn.Module):
    """Hint loss over several (student layer, teacher layer) pairs; ``forward`` returns
    (loss summed over the mini-batch, parts)."""

    def __init__(self, s_channels, t_channels, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.adapters = nn.ModuleList(Adapter(cs, ct) for cs, ct in zip(s_channels, t_channels))

    def forward(self, s_feats, t_feats, **_):
        check_pairs(s_feats, t_feats, "fitnet")
        total = s_feats[0].new_zeros(())
        for adapter, s, t in zip(self.adapters, s_feats, t_feats):
            diff = adapter(s.float()) - t.detach().float()
            total = total + diff.pow(2).flatten(1).mean(1).sum()
        loss = self.weight * total
        return loss, {"hint": loss.detach()}
