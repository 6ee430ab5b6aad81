"""Baselines on a DriveSim experiment: source-only, lower (source + 20 % target labels),
upper (source + all target labels), and target-only models, evaluated with `darknet-kd map`
on the source test, target test and both ("all": the mean of the two, as the seed paper's
table).  Markdown + JSON, with the command.

    .venv/bin/python scripts/baselines.py --preset cpu [--target night] [--iterations 3000]
        [--seeds 1] [--out runs/baselines] [--cfg cfg/yolov4-tiny-drivesim.cfg]

Each stage is skipped when its output exists (a killed run resumes: training itself
resumes from its checkpoint).  Hyper-parameters come from the cfg; nothing is tuned on test.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODELS = [("source-only", "source.data"), ("lower", "{t}-lower.data"), ("upper", "{t}-upper.data"),
          ("target-only", "{t}-target.data")]


def sh(cmd, quiet=False):
    print(f"$ {shlex.join(map(str, cmd))}", flush=True)
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL if quiet else None)


def evaluate(data, cfg, weights, out_json):
    if not out_json.exists():
        sh([BIN / "darknet-kd", "map", data, cfg, weights, "--json", out_json], quiet=True)
    return json.loads(out_json.read_text())["darknet"]["map"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--target", default="night")
    p.add_argument("--iterations", type=int, default=None, help="override [net] max_batches")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "runs" / "baselines"))
    p.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"))
    p.add_argument("--models", default=",".join(m for m, _ in MODELS))
    p.add_argument("--json", help="write the table as JSON here (default OUT/baselines.json)")
    args = p.parse_args()
    out = Path(args.out)
    cfg = Path(args.cfg)
    wanted = args.models.split(",")
    t0 = time.time()
    rows = {}
    for seed in range(1, args.seeds + 1):
        ds = out / f"drivesim-{args.preset}-s{seed}"
        if not (ds / "manifest.json").exists():
            sh([BIN / "darknet-kd", "drivesim", ds, "--preset", args.preset, "--seed", seed, "--target", args.target])
        for name, data in MODELS:
            if name not in wanted:
                continue
            data = ds / data.format(t=args.target)
            backup = out / f"{name}-s{seed}"
            weights = backup / f"{cfg.stem}_final.weights"
            if not weights.exists():
                cmd = [BIN / "darknet-kd", "train", data, cfg, "--backup", backup, "--seed", seed, "--bf16",
                       "--quiet"]
                if args.iterations:
                    cmd += ["--max-batches", args.iterations]
                if (backup / f"{cfg.stem}_last.ckpt").exists():
                    cmd.append("--resume")
                sh(cmd)
            src = evaluate(ds / "source-test.data", cfg, weights, backup / "map-source.json")
            tgt = evaluate(ds / f"{args.target}-test.data", cfg, weights, backup / f"map-{args.target}.json")
            rows.setdefault(name, []).append({"seed": seed, "source": src, "target": tgt, "all": (src + tgt) / 2})
    cmd = "python scripts/baselines.py " + " ".join(sys.argv[1:])
    table = {"command": cmd, "preset": args.preset, "target": args.target, "cfg": cfg.name,
             "iterations": args.iterations, "minutes": round((time.time() - t0) / 60, 1), "rows": rows}

    def fmt(vals):
        m = 100 * statistics.mean(vals)
        return f"{m:.1f} ± {100 * statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{m:.1f}"

    print(f"\n`{cmd}` — DriveSim `{args.preset}`, day → {args.target}, {cfg.name}, seeds 1..{args.seeds}\n")
    print("| model | source test | target test | all |\n|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {fmt([r['source'] for r in rs])} | {fmt([r['target'] for r in rs])} | "
              f"{fmt([r['all'] for r in rs])} |")
    mean = {n: statistics.mean(r["target"] for r in rs) for n, rs in rows.items()}
    if "upper" in mean and "lower" in mean:
        print(f"\nupper − lower on the target test: {100 * (mean['upper'] - mean['lower']):.1f} points")
    if "target-only" in mean and "source-only" in mean:
        print(f"target-only − source-only on the target test: {100 * (mean['target-only'] - mean['source-only']):.1f} points")
    dest = Path(args.json) if args.json else out / "baselines.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
