"""`darknet-kd drivesim OUT --preset {smoke,cpu,gpu} --seed N`: write a DriveSim experiment."""
from __future__ import annotations

import os
import time

from .dataset import PRESETS, generate, parse_targets


def add_parser(sub):
    presets = "; ".join(f"{k}: {v.size}px, source {'/'.join(map(str, v.source))}, target "
                        f"{'/'.join(map(str, v.target))} ({v.note})" for k, v in PRESETS.items())
    p = sub.add_parser("drivesim", help="generate the DriveSim domain-shift benchmark (a whole experiment folder)",
                       description=f"{__doc__.strip()} Presets (train/val/test scenes): {presets}. The source "
                                   "training scenes are also rendered in every target domain and the source test "
                                   "scenes in every domain (paired renders); see darknet_kd/data/drivesim/dataset.py "
                                   "for the folder layout and the .data files.")
    p.add_argument("out", help="experiment folder to create")
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="night",
                   help="target domain(s), comma-separated, from night, fog, rain (one block per domain)")
    p.add_argument("--target-frac", type=float, default=0.2, help="labelled share of the target training scenes")
    p.add_argument("--size", type=int, help="override the preset's image size (multiple of 32)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DriveSim folder")
    p.set_defaults(func=run)


def run(args):
    t0 = time.perf_counter()
    m = generate(args.out, args.preset, args.seed, parse_targets(args.target), args.target_frac, args.workers,
                 args.size, args.overwrite)
    n = m["images_written"]
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}: {n} images in {dt:.1f} s ({n / dt:.0f} images/s), "
          f"{len(m['data_files'])} .data files, {m['objects_dropped']} objects dropped by the visibility rules")
    for name, v in m["lists"].items():
        boxes = v.get("boxes", v.get("hidden_boxes"))
        print(f"  {v['file']:<28} {v['images']:>6} images  {v['domain']:<6} {v['labels']:<8} "
              + " ".join(f"{c}={k}" for c, k in boxes.items()))
    return 0
