"""GAN losses (LSGAN, hinge), PatchNCE, and the pool of past fakes.

Formulas (facts: joligen.md sections 2-3):

* LSGAN: L_D = 1/2 [MSE(D(r), 1) + MSE(D(f), 0)],  L_G = MSE(D(f), 1).
* hinge: L_D = 1/2 [mean ReLU(1 - D(r)) + mean ReLU(1 + D(f))],  L_G = -mean D(f).
  A discriminator that returns several logit maps (scales) gets the mean over them.
* PatchNCE (CUT): for each sampled position i, query q_i (from the translated image) and
  keys k_j (from the input, same positions, detached as in the original CUT), logits
  [q_i.k_i, q_i.k_j (j != i, same image)] / T with the diagonal of the negatives set to -10
  before dividing by T; cross entropy with target 0, mean over positions.  joliGEN's
  default is MoNCE (Sinkhorn-reweighted negatives) and lets gradients reach G through the
  negative keys; here it is CUT's PatchNCE, as the issue asks.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F


def _as_list(x):
    return x if isinstance(x, (list, tuple)) else [x]


def d_loss(mode: str, real_logits, fake_logits) -> torch.Tensor:
    """Discriminator loss for one discriminator (its logit maps averaged)."""
    r, f = _as_list(real_logits), _as_list(fake_logits)
    if mode == "lsgan":
        parts = [0.5 * (F.mse_loss(a.float(), torch.ones_like(a, dtype=torch.float32))
                        + F.mse_loss(b.float(), torch.zeros_like(b, dtype=torch.float32))) for a, b in zip(r, f)]
    elif mode == "hinge":
        parts = [0.5 * (F.relu(1 - a.float()).mean() + F.relu(1 + b.float()).mean()) for a, b in zip(r, f)]
    else:
        raise ValueError(f"unknown GAN mode {mode!r}")
    return sum(parts) / len(parts)


def g_loss(mode: str, fake_logits) -> torch.Tensor:
    """Generator adversarial loss for one discriminator."""
    f = _as_list(fake_logits)
    if mode == "lsgan":
        parts = [F.mse_loss(b.float(), torch.ones_like(b, dtype=torch.float32)) for b in f]
    elif mode == "hinge":
        parts = [-b.float().mean() for b in f]
    else:
        raise ValueError(f"unknown GAN mode {mode!r}")
    return sum(parts) / len(parts)


def patch_nce(q: torch.Tensor, k: torch.Tensor, batch: int, T: float = 0.07) -> torch.Tensor:
    """PatchNCE loss per position, shape (batch * n,).  ``q``, ``k``: (batch * n, C),
    L2-normalised, rows ordered image by image with the same positions in q and k."""
    n = q.shape[0] // batch
    k = k.detach()
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = torch.bmm(q.view(batch, n, -1), k.view(batch, n, -1).transpose(1, 2))
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    l_neg = l_neg.masked_fill(eye, -10.0).view(-1, n)
    logits = torch.cat([l_pos, l_neg], 1) / T
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=q.device),
                           reduction="none")


class ImagePool:
    """The pool of past fakes the discriminators see (pix2pix/CycleGAN): while it is not full
    every fake is stored and returned; then each fake is, with probability 1/2, swapped for
    a random stored one (returned) and stored in its place."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif random.random() > 0.5:
                j = random.randrange(self.size)
                out.append(self.images[j].clone())
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state(self) -> torch.Tensor:
        return torch.cat(self.images, 0).float().cpu() if self.images else torch.zeros(0)

    def load(self, t: torch.Tensor, device) -> None:
        self.images = [t[i:i + 1].to(device) for i in range(t.shape[0])] if t.numel() else []
