"""Fixed random banks shared by all scenes: sensor noise, surface grain, rain streaks.

Built once per process from constant seeds (so every worker has the same banks) and
cropped at a per-image random offset: per-pixel randomness at the cost of a slice
instead of a fresh N(0, 1) draw per pixel.
"""
from __future__ import annotations

import cv2
import numpy as np

TO_LIN = (np.arange(256, dtype=np.float32) / 255.0) ** 2
BANKS: dict = {}



def bank(kind: str, n: int) -> np.ndarray:
    """Fixed random banks (seeded constants, built once per process): ``noise`` (n, n, 3)
    N(0, 1); ``grain`` (n, n) multi-scale texture with unit std, ``gain`` (n, n, 3) = 1 + 0.08·grain; ``streaks`` (n, n) rain."""
    key = (kind, n)
    if key not in BANKS and kind == "gain":
        g = 1.0 + np.float32(0.08) * bank("grain", n)
        BANKS[key] = cv2.merge([g, g, g])
    if key not in BANKS:
        rng = np.random.default_rng({"noise": 11, "grain": 12, "streaks": 13}[kind])
        if kind == "noise":
            b = rng.standard_normal((n, n, 3), dtype=np.float32)
        elif kind == "grain":
            b = np.zeros((n, n), np.float32)
            for cell, amp in ((2, 0.5), (6, 0.6), (24, 1.0), (96, 0.8)):
                small = rng.standard_normal((n // cell + 2, n // cell + 2)).astype(np.float32)
                b += amp * cv2.resize(small, (n + 2 * cell, n + 2 * cell), interpolation=cv2.INTER_CUBIC)[cell:cell + n,
                                                                                                       cell:cell + n]
            b /= b.std()
        else:
            b = np.zeros((n, n), np.float32)
            k = n * n // 300
            x, y = rng.uniform(0, n, k), rng.uniform(0, n, k)
            ln = rng.uniform(0.02, 0.06, k) * n
            ang = 0.2
            for x0, y0, l0, w in zip(x, y, ln, rng.uniform(0.3, 1.0, k)):
                cv2.line(b, (int(x0), int(y0)), (int(x0 + l0 * np.sin(ang)), int(y0 + l0 * np.cos(ang))), float(w), 1,
                         cv2.LINE_AA)
            b = cv2.GaussianBlur(b, (0, 0), 0.7)
        BANKS[key] = b
    return BANKS[key]


def crop(bank: np.ndarray, rng, H: int, W: int) -> np.ndarray:
    n = bank.shape[0]
    y, x = int(rng.integers(0, n - H + 1)), int(rng.integers(0, n - W + 1))
    return bank[y:y + H, x:x + W]


def bank_size(H, W, pow2: bool = False):
    """Side of the banks cropped for an H x W image: at least 1.5·max(H, W) (room for the
    random offsets), rounded up to a multiple of 64 -- 640 at 416 px, where the 3-channel
    noise and grain banks take 4.9 MB each instead of 12 MB at the next power of two, so
    the crops stay in cache.  ``pow2``: the next power of two (the rain streak bank, whose
    streak lengths are fractions of its side)."""
    need = max(H, W) * 1.5
    if pow2:
        return max(512, 1 << int(np.ceil(np.log2(need))))
    return max(512, -(-int(np.ceil(need)) // 64) * 64)



def linear_albedo(albedo: np.ndarray, offset) -> np.ndarray:
    """Linear-light albedo (gamma 2) times the shared surface grain ``1 + 0.08·g``."""
    H, W = albedo.shape[:2]
    n = bank_size(H, W)
    g = bank("gain", n)
    y, x = int(offset[0] * (n - H + 1)), int(offset[1] * (n - W + 1))
    lin = cv2.LUT(albedo, TO_LIN)
    cv2.multiply(lin, g[y:y + H, x:x + W], dst=lin)
    return lin
