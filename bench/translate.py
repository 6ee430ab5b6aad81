"""Throughput of `domain-transfer translate`: images per second on CPU, fp32 and bf16.

Two measurements per generator preset (cpu: ngf 16, 4 blocks; gpu: the published ngf 128,
9 blocks), after a warm-up, with ``--threads`` torch threads:

- ``generator``: the full-resolution forward pass alone (``translate_tensor``) on
  ``--size`` x ``--size`` images already in memory;
- ``translate``: the whole command path (``translate_dataset``: read JPEG, translate,
  write JPEG + label copy, lists and .data) on ``--images`` files.

``GFLOP/img`` is the generator's forward cost at ``--size`` (torch.utils.flop_counter: 2 per
multiply-add of convolutions and matrix products), so ``generator img/s x GFLOP/img`` is the
arithmetic rate reached.  Weights are random (speed does not depend on them).  The machine's
1-minute load average is printed: on a shared machine other processes take cores and the
figures drop.

    .venv/bin/python bench/translate.py [--size 256] [--images 16] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.darknet import write_data_file, write_labels, write_list, write_names  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.train.checkpoint import save_checkpoint  # noqa: E402
from domain_transfer.config import preset  # noqa: E402
from domain_transfer.train import KIND, build_generator  # noqa: E402
from domain_transfer.translate import translate_dataset, translate_tensor  # noqa: E402


def make_images(root: Path, n: int, size: int):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (9, 9), 3)
        p = root / "JPEGImages" / f"{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        write_labels(root / "labels" / f"{i:04d}.txt", np.array([[0, 0.5, 0.5, 0.2, 0.3]]))
        paths.append(p)
    write_list(root / "train.txt", paths)
    write_names(root / "x.names", ["thing"])
    write_data_file(root / "x.data", {"classes": 1, "train": root / "train.txt", "names": root / "x.names"})
    return root / "x.data"


def bench_generator(G, size: int, amp: bool, seconds: float = 3.0) -> float:
    x = torch.rand(1, 3, size, size) * 2 - 1
    translate_tensor(G, x, amp=amp)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        translate_tensor(G, x, amp=amp)
        n += 1
    return n / (time.perf_counter() - t0)


def generator_gflop(G, size: int) -> float:
    """Forward FLOPs of G on one size x size image, in GFLOP."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        G(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="cpu,gpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"bench/translate.py --size {a.size} --images {a.images} --threads {a.threads}")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_images(tmp / "src", a.images, a.size)
        for name in a.presets.split(","):
            cfg = preset(name)
            torch.manual_seed(0)
            G = build_generator(cfg).eval()
            ck = tmp / f"{name}.ckpt"
            save_checkpoint(ck, kind=KIND, config=cfg.to_dict(), iteration=0, G=G.state_dict())
            params = sum(p.numel() for p in G.parameters())
            gflop = generator_gflop(G, a.size)
            for amp in (False, True):
                gen = bench_generator(G, a.size, amp)
                out = tmp / f"out-{name}-{amp}"
                t0 = time.perf_counter()
                translate_dataset(ck, data, out, ema=False, amp=amp, device="cpu", progress=False)
                full = a.images / (time.perf_counter() - t0)
                rows.append({"preset": name, "params": params, "gflop_per_img": gflop,
                             "dtype": "bf16" if amp else "fp32", "generator_img_s": gen, "translate_img_s": full})
    print(f"{'preset':8s}{'params':>10s}{'GFLOP/img':>11s}{'dtype':>7s}{'generator img/s':>17s}"
          f"{'GFLOP/s':>9s}{'translate img/s':>17s}")
    for r in rows:
        print(f"{r['preset']:8s}{r['params'] / 1e6:9.2f}M{r['gflop_per_img']:11.2f}{r['dtype']:>7s}"
              f"{r['generator_img_s']:17.2f}{r['generator_img_s'] * r['gflop_per_img']:9.1f}"
              f"{r['translate_img_s']:17.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if a.json:
        atomic_write(a.json, json.dumps({"args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
