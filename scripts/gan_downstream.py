#!/usr/bin/env python
"""Downstream test of the GAN (issue 8): does a detector trained on translated source only
close the source-only → target-trained gap on the target test split?

    .venv/bin/python scripts/gan_downstream.py [EXPERIMENT] [--preset cpu] [--ckpt GAN.ckpt |
        --gan-iters 3000] [--iterations N] [--out runs/gan_downstream] [--threads 1]

Stages (each skipped when its output exists, so a killed run resumes with the same command;
training itself resumes from its checkpoint):

1. DriveSim: EXPERIMENT, or ``darknet-kd drivesim OUT/drivesim-<preset>`` when none is given;
2. ``source-only`` detector: ``darknet-kd train source.data CFG`` (source labels only);
3. the GAN, unless ``--ckpt``: ``domain-transfer train --source source.data --target
   <D>-labelled.txt,<D>-unlabelled.txt`` (every target training image; labels of the
   labelled share only, for the identity branch's semantic consistency).  Its projected
   discriminator uses the frozen backbone of the source-only detector of stage 2
   (``--projector random``: a randomly initialised one);
4. ``domain-transfer translate CKPT source.data OUT/translated --lists train`` — or, with
   ``--translated FOLDER``, an existing translation of the same checkpoint and source (e.g. the
   pipeline's ``WORK/translated``), checked through its ``translate.json``;
5. ``translated`` detector: the same cfg and budget on the translated source list only;
6. ``target-trained`` detector on ``<D>-target.data`` — every target training label
   (the labelled share + the hidden labels of the unlabelled images), no source images:
   the in-domain reference (``--target-model upper``: source + all target labels instead);
7. ``darknet-kd map`` of each ``_final.weights`` on ``<D>-test.data`` and ``source-test.data``.

All detectors share the cfg, seed and iteration budget; nothing is chosen on a test split.
The table (Markdown + JSON, with the command) gives mAP@0.5 on both test splits and the
share of the source-only → target-trained gap on the target test split that the translated
detector closes: ``(translated − source-only) / (target-trained − source-only)``.
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
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from darknet_kd.fileio import atomic_write  # noqa: E402

MODELS = ("source-only", "translated", "target-trained")


def gap_closed(source_only: float, translated: float, target_trained: float, min_gap: float = 1e-3):
    """Percent of the source-only → target-trained gap that the translated detector closes
    (100: as good as target-trained, 0: no better than source-only, < 0: worse); None when the
    gap is below ``min_gap`` (in mAP, 0..1) or negative, where the ratio means nothing."""
    gap = target_trained - source_only
    if gap < min_gap:
        return None
    return 100.0 * (translated - source_only) / gap


def make_table(maps: dict, meta: dict) -> dict:
    """``maps``: model → {"target": mAP, "source": mAP} (0..1) → the JSON table."""
    missing = [m for m in MODELS if m not in maps]
    if missing:
        raise ValueError(f"no mAP for {', '.join(missing)}")
    t = {m: maps[m]["target"] for m in MODELS}
    return {**meta, "rows": {m: dict(maps[m]) for m in MODELS},
            "gap_points": 100 * (t["target-trained"] - t["source-only"]),
            "gap_closed_percent": gap_closed(t["source-only"], t["translated"], t["target-trained"])}


def format_markdown(table: dict) -> str:
    """The table as Markdown: mAP@0.5 (%) per model on the target / source test split."""
    d = table.get("target", "target")
    lines = [f"`{table['command']}`", "",
             f"DriveSim `{table.get('preset')}`, day → {d}, {table.get('cfg')}, "
             f"{table.get('iterations') or 'cfg'} iterations each, GAN: {table.get('gan')}", "",
             f"| detector (training data) | mAP@0.5 {d} test | mAP@0.5 source test |", "|---|---:|---:|"]
    what = {"source-only": "source labels", "translated": "translated source",
            "target-trained": table.get("target_data", "target labels")}
    for m in MODELS:
        r = table["rows"][m]
        lines.append(f"| {m} ({what[m]}) | {100 * r['target']:.1f} | {100 * r['source']:.1f} |")
    g = table["gap_closed_percent"]
    lines += ["", f"source-only → target-trained gap on the {d} test: {table['gap_points']:+.1f} points; "
              + (f"closed by the translated detector: **{g:.0f} %**" if g is not None
                 else "too small to express a share of (n/a)")]
    return "\n".join(lines) + "\n"


def reused_translation(folder, ckpt, source_data) -> Path:
    """The ``.data`` of a finished ``domain-transfer translate`` output ``folder`` made from
    ``ckpt`` (same SHA-256) and ``source_data``; ValueError naming the file otherwise.
    ``translate`` writes the ``.data`` after its last image, so its presence means complete."""
    from domain_transfer.train import file_sha256

    folder, source_data = Path(folder), Path(source_data)
    stamp_path = folder / "translate.json"
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{stamp_path}: not a domain-transfer translation ({e})") from None
    if not isinstance(stamp, dict) or stamp.get("sha256") != file_sha256(ckpt):
        raise ValueError(f"{stamp_path}: made with another checkpoint than {ckpt}")
    if stamp.get("source") != str(source_data.resolve()):
        raise ValueError(f"{stamp_path}: translates {stamp.get('source')}, not {source_data.resolve()}")
    data = folder / f"{source_data.stem}.data"
    if not data.exists():
        raise ValueError(f"{data}: missing (the translation has not finished)")
    return data


def sh(cmd, threads=None, quiet=False):
    print(f"$ {shlex.join(map(str, cmd))}", flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    subprocess.run([str(c) for c in cmd], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL if quiet else None)


def train_detector(data, cfg, backup, args) -> Path:
    weights = backup / f"{cfg.stem}_final.weights"
    if not weights.exists():
        cmd = [BIN / "darknet-kd", "train", data, cfg, "--backup", backup, "--seed", args.seed, "--quiet",
               "--device", args.device]
        cmd += ["--bf16"] if args.device == "cpu" else []
        cmd += ["--max-batches", args.iterations] if args.iterations else []
        cmd += ["--batch", args.batch, "--subdivisions", 1] if args.batch else []
        cmd += ["--threads", args.threads] if args.threads else []
        cmd += ["--resume"] if (backup / f"{cfg.stem}_last.ckpt").exists() else []
        sh(cmd, args.threads)
    return weights


def evaluate(data, cfg, weights, out_json, args) -> float:
    if not out_json.exists():
        sh([BIN / "darknet-kd", "map", data, cfg, weights, "--json", out_json, "--device", args.device,
            "--workers", 1], args.threads, quiet=True)
    return json.loads(out_json.read_text())["darknet"]["map"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", nargs="?", help="DriveSim experiment folder (default: generate OUT/drivesim-PRESET)")
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "gpu"), help="DriveSim preset to generate")
    p.add_argument("--target", default="night", help="target domain of the experiment")
    p.add_argument("--ckpt", help="GAN checkpoint (default: train one into OUT/gan)")
    p.add_argument("--translated", help="reuse this `domain-transfer translate` output of --ckpt (e.g. the "
                   "pipeline's WORK/translated) instead of translating again")
    p.add_argument("--gan-iters", type=int, default=3000)
    p.add_argument("--gan-preset", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--gan-args", default="", help="extra `domain-transfer train` options, quoted")
    p.add_argument("--projector", default="source", choices=("source", "random"),
                   help="projected D backbone: the source-only detector's (default) or random")
    p.add_argument("--target-model", default="target", choices=("target", "upper"),
                   help="target-trained reference: all target labels only (default) or source + them")
    p.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"))
    p.add_argument("--iterations", type=int, default=None, help="override [net] max_batches for all three")
    p.add_argument("--batch", type=int, default=None, help="override [net] batch (subdivisions 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch / OpenMP threads of every stage")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "runs" / "gan_downstream"))
    p.add_argument("--json", help="write the table here (default OUT/gan_downstream.json, and .md)")
    args = p.parse_args(argv)
    out, cfg, d = Path(args.out).resolve(), Path(args.cfg).resolve(), args.target
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    ds = Path(args.experiment).resolve() if args.experiment else out / f"drivesim-{args.preset}"
    if not (ds / "manifest.json").exists():
        if args.experiment:
            sys.exit(f"gan_downstream: {ds} is not a DriveSim experiment (no manifest.json)")
        sh([BIN / "darknet-kd", "drivesim", ds, "--preset", args.preset, "--seed", args.seed, "--target", d]
           + (["--workers", args.threads] if args.threads else []))
    preset = json.loads((ds / "manifest.json").read_text()).get("preset")

    weights = {"source-only": train_detector(ds / "source.data", cfg, out / "source-only", args)}

    ckpt = Path(args.ckpt).resolve() if args.ckpt else out / "gan" / "last.ckpt"
    done = out / "gan" / "done.json"
    if not args.ckpt and not done.exists():
        proj = weights["source-only"] if args.projector == "source" else "random"
        cmd = [BIN / "domain-transfer", "train", "--source", ds / "source.data",
               "--target", f"{ds / f'{d}-labelled.txt'},{ds / f'{d}-unlabelled.txt'}", "--out", out / "gan",
               "--preset", args.gan_preset, "--iters", args.gan_iters, "--pairs", ds,
               "--detector-cfg", cfg, "--detector-weights", proj, "--device", args.device,
               *shlex.split(args.gan_args)]
        cmd += ["--threads", args.threads] if args.threads else []
        cmd += ["--resume"] if ckpt.exists() else []
        sh(cmd, args.threads)
        atomic_write(done, json.dumps({"command": shlex.join(map(str, cmd))}) + "\n")

    if args.translated:
        if not args.ckpt:
            sys.exit("gan_downstream: --translated needs --ckpt, the checkpoint it was made with")
        try:
            translated = reused_translation(args.translated, ckpt, ds / "source.data")
        except ValueError as e:
            sys.exit(f"gan_downstream: {e}")
    else:
        translated = out / "translated" / "source.data"
    if not translated.exists():
        cmd = [BIN / "domain-transfer", "translate", ckpt, ds / "source.data", translated.parent, "--lists", "train",
               "--device", args.device]
        sh(cmd + (["--threads", args.threads] if args.threads else []), args.threads)
    weights["translated"] = train_detector(translated, cfg, out / "translated-det", args)
    target_data = ds / f"{d}-{args.target_model}.data"
    weights["target-trained"] = train_detector(target_data, cfg, out / "target-trained", args)

    maps = {m: {"target": evaluate(ds / f"{d}-test.data", cfg, w, w.parent / f"map-{d}-test.json", args),
                "source": evaluate(ds / "source-test.data", cfg, w, w.parent / "map-source-test.json", args)}
            for m, w in weights.items()}
    meta = {"command": "python scripts/gan_downstream.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "preset": preset, "experiment": str(ds), "target": d, "cfg": cfg.name, "iterations": args.iterations,
            "seed": args.seed, "target_data": target_data.name,
            "gan": (f"checkpoint {ckpt}" + (f", translation {translated.parent}" if args.translated else "")
                    if args.ckpt else
                    f"{args.gan_iters} iterations of the {args.gan_preset} preset, {args.projector} projector"),
            "minutes": round((time.time() - t0) / 60, 1)}
    table = make_table(maps, meta)
    md = format_markdown(table)
    print("\n" + md)
    dest = Path(args.json) if args.json else out / "gan_downstream.json"
    atomic_write(dest, json.dumps(table, indent=1) + "\n")
    atomic_write(dest.with_suffix(".md"), md)


if __name__ == "__main__":
    main()
