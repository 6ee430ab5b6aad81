"""Resumable checkpoints that load without unpickling arbitrary objects.

A checkpoint holds tensors, numbers, strings, lists and dicts only, and is read with
``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: no code runs).
RNG states are stored as tensors / plain lists.  Written through a temporary name.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_path

FORMAT = "darknet-kd-checkpoint/1"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [list(random.getstate()[1]), random.getstate()[2]],
        "python_version": random.getstate()[0],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((state["python_version"], tuple(state["python"][0]), state["python"][1]))


def save_checkpoint(path, **payload) -> None:
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("checkpoint not found", path) from None
    except Exception as e:  # the restricted unpickler refuses anything but plain data
        raise CheckpointError(f"not a darknet-kd checkpoint or unsafe content: {str(e).splitlines()[0]}",
                              path) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"not a darknet-kd checkpoint (format {ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r}, expected {FORMAT})", path)
    return ck
