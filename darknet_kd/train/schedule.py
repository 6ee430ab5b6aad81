"""Darknet's learning-rate schedule and optimiser, exactly (network.c:get_current_rate,
update_network).

Darknet accumulates the negative gradient of the summed per-image loss over all
subdivisions of a batch B, then:  u -= decay*B*w;  w += lr/B * u;  u *= momentum.
With v = -u/B this is   v = momentum*v + (g/B + decay*w);  w -= lr*v,   which is
torch.optim.SGD(lr, momentum, weight_decay=decay) fed with the gradient of
(summed loss)/B.  Biases and batch-norm scales get no decay in Darknet.
"""
from __future__ import annotations

import math

import torch


def learning_rate(net, batch_num: int, ngpus: int = 1) -> float:
    """Darknet's current rate at update ``batch_num`` for a [net] (NetOptions)."""
    lr = net.learning_rate * ngpus
    if batch_num < net.burn_in:
        return lr * (batch_num / net.burn_in) ** net.power
    policy = net.policy
    if policy == "constant":
        return lr
    if policy == "steps":
        for step, scale in zip(net.steps, net.scales):
            if step > batch_num:
                break
            lr *= scale
        return lr
    if policy == "step":
        return lr * net.scale ** (batch_num // max(net.step, 1))
    if policy == "exp":
        return lr * net.gamma ** batch_num
    if policy == "poly":
        return lr * (1 - batch_num / max(net.max_batches, 1)) ** net.power
    if policy == "sig":
        return lr * (1.0 / (1.0 + math.exp(net.gamma * (batch_num - net.step))))
    raise ValueError(f"learning-rate policy {policy!r} is not supported")


POLICIES = ("constant", "steps", "step", "exp", "poly", "sig")


def darknet_sgd(model, net) -> torch.optim.SGD:
    """SGD with Darknet's momentum and decay; no decay on biases and BN parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": net.decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=net.learning_rate, momentum=net.momentum)
