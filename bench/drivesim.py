"""DriveSim generation speed: images per second at 416x416 with worker processes.

Three measurements, each after a warm-up (the fixed random banks are built once per
worker):

- ``1 domain/scene``: every scene sampled, rasterised, imaged in one domain (cycling
  day, night, fog, rain) and JPEG-encoded in memory -- the worst case, each image
  pays for its own scene;
- ``4 domains/scene``: every scene imaged in all four domains (the paired test split);
- ``darknet-kd drivesim``: the real experiment writer (files, labels, lists, .data,
  manifest) with the cpu preset's mix of splits scaled to --scenes, at --size.

    .venv/bin/python bench/drivesim.py [--size 416] [--workers 2] [--scenes 400] [--json out.json]

The machine's 1-minute load average is printed before and after: on a shared machine
other processes take cores and the figures drop accordingly.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.drivesim import DOMAINS, generate, make_scene, rasterize, render_domain  # noqa: E402
from darknet_kd.data.drivesim.dataset import JPEG_QUALITY, Preset, domain_rng  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402

_SIZE = 416


def _init(size):
    global _SIZE
    cv2.setNumThreads(1)
    _SIZE = size


def _job(arg):
    index, domains = arg
    L = rasterize(make_scene(12345, 1, index, "source" if index % 2 else "target"), _SIZE, _SIZE)
    n = 0
    for d in domains:
        img = render_domain(L, d, domain_rng(12345, 1, index, d))
        n += len(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1])
    return n


def _rate(pool, scenes, per_scene_domains):
    jobs = [(i, per_scene_domains(i)) for i in range(scenes)]
    pool.map(_job, jobs[: 4 * pool._processes], chunksize=1)              # warm-up: banks, imports
    t = time.perf_counter()
    pool.map(_job, jobs, chunksize=4)
    dt = time.perf_counter() - t
    images = sum(len(j[1]) for j in jobs)
    return images / dt, images, dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenes", type=int, default=400)
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = []
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(args.workers, initializer=_init, initargs=(args.size,)) as pool:
        r, n, dt = _rate(pool, args.scenes, lambda i: (DOMAINS[i % 4],))
        rows.append(("1 domain/scene (render + JPEG)", n, dt, r))
        r, n, dt = _rate(pool, args.scenes // 2, lambda i: DOMAINS)
        rows.append(("4 domains/scene (render + JPEG)", n, dt, r))
    with tempfile.TemporaryDirectory() as tmp:
        k = max(1, args.scenes // 20)                                     # the cpu preset's proportions
        pre = Preset(args.size, (8 * k, k, k), (8 * k, k, k), "bench")
        t = time.perf_counter()
        m = generate(Path(tmp) / "ds", pre, seed=0, workers=args.workers, progress=False)
        dt = time.perf_counter() - t
        rows.append(("`darknet-kd drivesim` (files, night target)", m["images_written"], dt,
                     m["images_written"] / dt))
    load1 = os.getloadavg()[0]
    cmd = "python bench/drivesim.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"DriveSim generation at {args.size}x{args.size}, {args.workers} worker processes "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {load0:.1f} before, {load1:.1f} after)\n")
    print("| mode | images | seconds | images/s |")
    print("|---|---:|---:|---:|")
    for name, n, dt, r in rows:
        print(f"| {name} | {n} | {dt:.2f} | {r:.0f} |")
    print(f"\ncommand: `{cmd.strip()}`")
    if args.json:
        atomic_write(args.json, json.dumps({"size": args.size, "workers": args.workers, "load": [load0, load1],
                                            "rows": [dict(mode=a, images=b, seconds=c, images_per_s=d)
                                                     for a, b, c, d in rows], "command": cmd.strip()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
