"""Parity table: every shipped cfg x input size, max |ours - OpenCV DNN| of the decoded
outputs with seeded random weights (darknet_kd.model.parity).  Markdown + JSON.

    .venv/bin/python scripts/parity_table.py [--json docs/parity.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

from darknet_kd.model.parity import random_parity

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"yolov3-tiny": (416, 320, 608), "yolov4-tiny": (416, 320, 608), "yolov4-tiny-3l": (416, 320, 608),
         "yolov3": (416, 320), "yolov4": (416, 320, 608)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for cfg in sorted((ROOT / "cfg").glob("*.cfg")):
        sizes = SIZES.get(cfg.stem, (None,))
        for s in sizes:
            t = time.time()
            d = random_parity(cfg, s, seed=args.seed)
            rows.append({"cfg": cfg.name, "size": s or "cfg", "max_abs_diff": d, "seconds": round(time.time() - t, 1)})
            print(f"{cfg.name} {s}: {d:.2e}", file=sys.stderr)
    cmd = "python scripts/parity_table.py " + " ".join(sys.argv[1:])
    print(f"`{cmd}` — OpenCV {cv2.__version__}, seeded random weights (seed {args.seed}), batch 1\n")
    print("| cfg | input | max abs diff vs OpenCV DNN |\n|---|---|---|")
    for r in rows:
        print(f"| {r['cfg']} | {r['size']} | {r['max_abs_diff']:.2e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": cmd, "opencv": cv2.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
