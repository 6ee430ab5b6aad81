"""`make demo`: the main job of darknet-kd, in small, on 2 CPU cores.

Every step is a command a user would type; each is printed before it runs, with its time.

1. DriveSim: a day (source) / night (target) experiment folder (`darknet-kd drivesim`).
2. Train the lower baseline (source + 20 % labelled night) for a few minutes (`darknet-kd train`).
3. mAP@0.5 on the day and night test splits (`darknet-kd map`), as `darknet detector map` does.
4. Drawn detections on night test images (`darknet-kd detect --out`).

    .venv/bin/python scripts/demo.py [--out runs/demo] [--preset cpu] [--iterations 300]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(cmd: list[str], log: list) -> float:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    dt = time.time() - t
    log.append((shlex.join(cmd), dt))
    print(f"[{dt:.0f} s]", flush=True)
    return dt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    p.add_argument("--preset", default="cpu")
    p.add_argument("--iterations", type=int, default=300, help="training iterations (batch 16)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    ds = out / "drivesim"
    dk = str(BIN / "darknet-kd")
    log: list = []
    t0 = time.time()
    if not (ds / "manifest.json").exists():
        run([dk, "drivesim", str(ds), "--preset", args.preset, "--seed", str(args.seed)], log)
    else:
        print(f"\n(DriveSim experiment exists: {ds})")
    cfg = str(ROOT / "cfg" / "yolov4-tiny-drivesim.cfg")
    backup = out / "lower"
    weights = backup / "yolov4-tiny-drivesim_final.weights"
    if not weights.exists():
        run([dk, "train", str(ds / "night-lower.data"), cfg, "--max-batches", str(args.iterations),
             "--backup", str(backup), "--bf16", "--map-every", str(args.iterations), "--seed", str(args.seed)], log)
    results = {}
    for name, data in (("day", "source-test.data"), ("night", "night-test.data")):
        js = out / f"map-{name}.json"
        run([dk, "map", str(ds / data), cfg, str(weights), "--json", str(js)], log)
        results[name] = json.loads(js.read_text())["darknet"]["map"]
    test_list = (ds / "night-test.txt").read_text().split()[:6]
    sample = out / "night-samples.txt"
    sample.write_text("\n".join(str((ds / t) if not os.path.isabs(t) else t) for t in test_list) + "\n")
    run([dk, "detect", str(ds / "night-test.data"), cfg, str(weights), str(sample), "--out", str(out / "detections"),
         "--quiet"], log)
    total = time.time() - t0
    print("\n## darknet-kd demo\n")
    print(f"`python scripts/demo.py {' '.join(sys.argv[1:])}` — {total / 60:.1f} min on {os.cpu_count()} cores\n")
    print("| model | trained on | day test mAP@0.5 | night test mAP@0.5 |\n|---|---|---|---|")
    print(f"| yolov4-tiny-drivesim, {args.iterations} it | day + 20 % night labels | "
          f"{100 * results['day']:.1f} | {100 * results['night']:.1f} |")
    print("\n| step | seconds |\n|---|---|")
    for cmd, dt in log:
        print(f"| `{cmd.replace(str(ROOT) + '/', '').replace(str(BIN) + '/', '')}` | {dt:.0f} |")
    print(f"\nDrawn detections: {out / 'detections'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
