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
other processes take cores and the wall-clock figures drop accordingly.  The CPU time per
image (measured inside the workers; for the writer, all its processes) does not depend
on time slicing, so the last column, ``workers / CPU time per image``, is the rate the
same work reaches on that many otherwise idle cores (an estimate, labelled as such).
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
from darknet_kd.data.drivesim.dataset import JPEG_QUALITY, Preset, domain_rng, retain_freed_memory  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402

_SIZE = 416


def _init(size):
    global _SIZE
    cv2.setNumThreads(1)
    retain_freed_memory()                  # as the writer's workers do
    _SIZE = size


def _job(arg):
    index, domains = arg
    t = time.process_time()
    L = rasterize(make_scene(12345, 1, index, "source" if index % 2 else "target"), _SIZE, _SIZE)
    n = 0
    for d in domains:
        img = render_domain(L, d, domain_rng(12345, 1, index, d))
        n += len(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1])
    return time.process_time() - t


def _cpu():
    """CPU seconds of this process and its reaped children (the writer's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _rate(pool, scenes, per_scene_domains):
    jobs = [(i, per_scene_domains(i)) for i in range(scenes)]
    pool.map(_job, jobs[: 4 * pool._processes], chunksize=1)              # warm-up: banks, imports
    t = time.perf_counter()
    cpu = sum(pool.map(_job, jobs, chunksize=4))
    dt = time.perf_counter() - t
    images = sum(len(j[1]) for j in jobs)
    return images / dt, images, dt, cpu / images


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
        r, n, dt, c = _rate(pool, args.scenes, lambda i: (DOMAINS[i % 4],))
        rows.append(("1 domain/scene (render + JPEG)", n, dt, r, c))
        r, n, dt, c = _rate(pool, args.scenes // 2, lambda i: DOMAINS)
        rows.append(("4 domains/scene (render + JPEG)", n, dt, r, c))
    with tempfile.TemporaryDirectory() as tmp:
        k = max(1, args.scenes // 20)                                     # the cpu preset's proportions
        pre = Preset(args.size, (8 * k, k, k), (8 * k, k, k), "bench")
        t, c0 = time.perf_counter(), _cpu()
        m = generate(Path(tmp) / "ds", pre, seed=0, workers=args.workers, progress=False)
        dt, cpu = time.perf_counter() - t, _cpu() - c0
        n = m["images_written"]
        rows.append(("`darknet-kd drivesim` (files, night target)", n, dt, n / dt, cpu / n))
    load1 = os.getloadavg()[0]
    cmd = "python bench/drivesim.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"DriveSim generation at {args.size}x{args.size}, {args.workers} worker processes "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {load0:.1f} before, {load1:.1f} after)\n")
    print(f"| mode | images | seconds | images/s | CPU ms/image | images/s on {args.workers} idle cores |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, dt, r, c in rows:
        print(f"| {name} | {n} | {dt:.2f} | {r:.0f} | {1000 * c:.1f} | {args.workers / c:.0f} |")
    print(f"\ncommand: `{cmd.strip()}`")
    if args.json:
        atomic_write(args.json, json.dumps({"size": args.size, "workers": args.workers, "load": [load0, load1],
                                            "rows": [dict(mode=a, images=b, seconds=c, images_per_s=d, cpu_s_per_image=e)
                                                     for a, b, c, d, e in rows], "command": cmd.strip()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
