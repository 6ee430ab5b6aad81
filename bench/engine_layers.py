"""Per-layer time of the dkd engine in fp32 with its Winograd convolutions off
(DKD_WINOGRAD=0: oneDNN's direct kernels for every convolution) and on (the default), and in
bf16: one process, the nets take turns forward by forward so that a passing load falls on all
alike; times from the engine's own per-layer profile (Net.profile(), as `dkd bench --profile`).

    .venv/bin/python bench/engine_layers.py [--cfg yolov4-tiny] [--size 416] [--batch 1]
                                            [--forwards 20] [--threads 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

# As `dkd` does: OpenMP workers wait passively (read when the runtime loads, so set first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.engine import Net  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.model import Darknet  # noqa: E402
from darknet_kd.cfg import sized_cfg  # noqa: E402
from darknet_kd.model.weights import randomize  # noqa: E402

MODES = {"direct": ({"DKD_WINOGRAD": "0"}, False), "winograd": ({}, False), "bf16": ({}, True)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov4-tiny")
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--forwards", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    print("$ python bench/engine_layers.py " + " ".join(argv if argv is not None else sys.argv[1:]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sized_cfg(ROOT / "cfg" / f"{args.cfg}.cfg", args.size, Path(tmp))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = Darknet.from_cfg(cfg).eval()
        randomize(model, 0)
        weights = Path(tmp) / "w.weights"
        model.save_weights(weights)
        x = np.random.RandomState(0).rand(args.batch, 3, args.size, args.size).astype(np.float32)
        nets = {}
        for name, (env, bf16) in MODES.items():
            old = os.environ.pop("DKD_WINOGRAD", None)
            os.environ.update(env)
            nets[name] = Net(cfg, weights, bf16=bf16, threads=args.threads)  # planned at its first forward
            nets[name].forward(x)
            os.environ.pop("DKD_WINOGRAD", None)
            if old is not None:
                os.environ["DKD_WINOGRAD"] = old
            nets[name].forward(x)
            nets[name].profile()  # starts the sums here
        load = os.getloadavg()[0]
        for _ in tqdm(range(args.forwards), desc="forwards", leave=False):
            for n in nets.values():
                n.forward(x)
        tables = {k: n.profile().splitlines() for k, n in nets.items()}
    rows = []
    for i, line in enumerate(tables["direct"][1:-1]):
        ms = {k: float(t[i + 1][35:45]) for k, t in tables.items()}
        rows.append({"layer": line[:35].rstrip(), **ms})
    totals = {k: sum(r[k] for r in rows) for k in MODES}
    lines = [f"{args.cfg} {args.size}, batch {args.batch}, {args.threads} threads, {args.forwards} forwards each, "
             f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}", "",
             "| layer | direct fp32 (ms) | Winograd fp32 (ms) | direct / Winograd | bf16 (ms) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['direct'] / r['winograd']:.2f}x" if r["winograd"] > 0 else ""
        lines.append(f"| `{r['layer']}` | {r['direct']:.2f} | {r['winograd']:.2f} | {ratio} | {r['bf16']:.2f} |")
    lines.append(f"| total | {totals['direct']:.2f} | {totals['winograd']:.2f} | "
                 f"{totals['direct'] / totals['winograd']:.2f}x | {totals['bf16']:.2f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.json:
        atomic_write(args.json, json.dumps({"args": vars(args), "load": load, "rows": rows, "totals": totals}, indent=1) + "\n")


if __name__ == "__main__":
    main()
