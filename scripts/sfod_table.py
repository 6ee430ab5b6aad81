"""Source-free adaptation table on DriveSim: source-only, mean teacher (MT), LPLD and the
oracle (trained on the target's labels), mAP@0.5 on the target test split, for day → fog and
day → night, over seeds; plus the audit of the objects LPL recovers that HPL misses.

    .venv/bin/python scripts/sfod_table.py --preset cpu --seeds 3 [--first-seed 1] [--targets fog,night]
        [--out runs/sfod] [--cfg cfg/yolov4-tiny-drivesim.cfg] [--source-iterations N]
        [--adapt-epochs 10] [--adapt-lr LR] [--ignore-score S] [--hpl-thresh T|auto] [--adapt-seeds K]
        [--json docs/sfod.json] [--md docs/sfod.md]

Per seed s: ``darknet-kd drivesim`` (seed s, both targets); ``darknet-kd train source.data``
(the source model); per target D: ``darknet-kd adapt D-sfod.data --method mt|lpld`` from the
source weights (unlabelled target images only; D-val for model selection is not used here:
the *final* teacher is evaluated), ``darknet-kd train D-target.data`` (oracle), and
Darknet's mAP (``darknet-kd map``) on D-test.data for each model.  The audit runs the source model (the first
teacher) and the final LPLD teacher over ``D-unlabelled-audit`` (the unlabelled images with
their hidden labels).  ``--adapt-seeds K`` repeats each adaptation with the seeds s, s+100, ..,
s+100(K−1) from the same source model (run folders of the repeats get ``-aseedA``): the MT and LPLD rows
then average over source seeds × adaptation seeds, because one source model's adaptation moves by
several points between seeds.  Every stage is skipped when its output exists (a killed run resumes;
training resumes from its checkpoint).

``--preset mini`` is a small DriveSim variant defined here (128 px; 600/100/150 source and
target scenes) for a quick end-to-end check on a shared CPU, not the benchmark; with it the
cfg is rewritten to 128×128.
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
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from darknet_kd.cfg import sized_cfg  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.loss.lpld import LpldOptions  # noqa: E402

METHODS = ("source-only", "mt", "lpld", "oracle")
PUBLISHED_HPL = LpldOptions().hpl_thresh   # adapt's default HPL threshold (0.7)
LABELS = {"source-only": "source-only", "mt": "mean teacher", "lpld": "LPLD", "oracle": "oracle (target labels)"}


def sh(cmd, quiet=False):
    print(f"$ {shlex.join(map(str, cmd))}", flush=True)
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL if quiet else None)


def dataset(out: Path, preset: str, seed: int, targets, workers: int) -> Path:
    ds = out / f"drivesim-{preset}-s{seed}"
    if (ds / "manifest.json").exists():
        return ds
    if preset == "mini":
        from darknet_kd.data.drivesim.dataset import Preset, generate

        print(f"generating DriveSim mini (seed {seed}) in {ds}", flush=True)
        generate(ds, Preset(128, (600, 100, 150), (600, 100, 150), "sfod_table mini"), seed, targets,
                 workers=workers, overwrite=True)
    else:
        sh([BIN / "darknet-kd", "drivesim", ds, "--preset", preset, "--seed", seed, "--target", ",".join(targets),
            "--workers", workers, "--overwrite"])
    return ds


def train(data, cfg, backup: Path, seed, iterations, extra=()):
    weights = backup / f"{cfg.stem}_final.weights"
    if not weights.exists():
        cmd = [BIN / "darknet-kd", "train", data, cfg, "--backup", backup, "--seed", seed, "--quiet", *extra]
        if iterations:
            cmd += ["--max-batches", iterations]
        if (backup / f"{cfg.stem}_last.ckpt").exists():
            cmd.append("--resume")
        sh(cmd)
    return weights


def adapt(data, cfg, source, backup: Path, seed, method, args, extra=()):
    weights = backup / f"{cfg.stem}_final.weights"
    if not weights.exists():
        cmd = [BIN / "darknet-kd", "adapt", data, cfg, source, "--method", method, "--backup", backup,
               "--seed", seed, "--epochs", args.adapt_epochs, "--quiet", "--map-every", 10 ** 9, *extra]
        if args.adapt_lr:
            cmd += ["--learning-rate", args.adapt_lr]
        if args.ignore_score is not None:
            cmd += ["--ignore-score", args.ignore_score]
        if args.hpl_thresh is not None:
            cmd += ["--hpl-thresh", args.hpl_thresh]
        if (backup / f"{cfg.stem}_last.ckpt").exists():
            cmd.append("--resume")
        sh(cmd)
    return weights


def adapt_runs(run: Path, name: str, seed: int, n: int):
    """(adaptation seed, run folder) of the n adaptations from source seed ``seed``: seeds seed, seed+100, ..;
    the first keeps the plain folder name (the single-seed layout), the others get ``-aseedA``."""
    return [(a, run / (name + (f"-aseed{a}" if a != seed else ""))) for a in range(seed, seed + 100 * n, 100)]


def evaluate(data, cfg, weights, out_json: Path) -> float:
    """`darknet-kd map DATA CFG WEIGHTS` (Darknet's mAP@0.5 of the valid= list), cached as JSON."""
    if not out_json.exists():
        from darknet_kd.data.darknet import read_data_file
        from darknet_kd.eval.evaluate import evaluate as darknet_map
        from darknet_kd.model import load

        print(f"map {data} {weights}", flush=True)
        res = darknet_map(load(cfg, weights), read_data_file(data), workers=0, progress=False)
        atomic_write(out_json, json.dumps({"data": str(data), "weights": str(weights), **res.to_dict()}, indent=1))
    return json.loads(out_json.read_text())["darknet"]["map"]


def audit(ds: Path, target: str, cfg: Path, weights: Path, out_json: Path, hpl_thresh: float = PUBLISHED_HPL) -> dict:
    if hpl_thresh != PUBLISHED_HPL:
        out_json = out_json.with_name(f"{out_json.stem}-hpl{hpl_thresh:.4f}.json")
    if out_json.exists():
        return json.loads(out_json.read_text())
    from darknet_kd.data.darknet import read_list
    from darknet_kd.data.dataset import load_all_labels
    from darknet_kd.model import load
    from darknet_kd.train.adapt import audit_pseudo_labels

    images = read_list(ds / f"{target}-unlabelled-audit.txt", anchors=(ds,))
    model = load(cfg, weights)
    res = audit_pseudo_labels(model, images, load_all_labels(images, model.num_classes),
                              LpldOptions(hpl_thresh=hpl_thresh), progress=False)
    res["hpl_thresh"] = hpl_thresh
    atomic_write(out_json, json.dumps(res, indent=1) + "\n")
    return res


def adapt_hpl_thresh(run_dir: Path, cfg: Path) -> float:
    """The HPL threshold an adaptation used (its summary; --hpl-thresh auto picks it there)."""
    return json.loads((run_dir / f"{cfg.stem}_summary.json").read_text()).get("hpl_thresh", PUBLISHED_HPL)


def hpl_text(audits) -> str:
    thr = sorted({e[who].get("hpl_thresh", PUBLISHED_HPL) for es in audits.values() for e in es for who in e if who != "seed"})
    return ", ".join(f"{t:.4g}" for t in thr) or f"{PUBLISHED_HPL:.4g}"


def gap_closed(rows, method, target):
    """(mean(method) − mean(source-only)) / (mean(oracle) − mean(source-only)), None without those rows."""
    src, ora, got = (rows.get(k, {}).get(target) for k in ("source-only", "oracle", method))
    if not (src and ora and got) or statistics.mean(ora) == statistics.mean(src):
        return None
    return (statistics.mean(got) - statistics.mean(src)) / (statistics.mean(ora) - statistics.mean(src))


def fmt(vals):
    m = 100 * statistics.mean(vals)
    return f"{m:.1f} ± {100 * statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{m:.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", help="DriveSim preset (smoke, cpu, gpu) or mini (see above)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=1,
                   help="seeds FIRST..FIRST+SEEDS-1 (run seeds in parallel processes, then one --seeds N "
                        "run makes the whole table from their outputs)")
    p.add_argument("--targets", default="fog,night")
    p.add_argument("--out", default=str(ROOT / "runs" / "sfod"))
    p.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"))
    p.add_argument("--source-iterations", type=int, help="override [net] max_batches of the source and oracle models")
    p.add_argument("--batch", type=int, help="override [net] batch of every run")
    p.add_argument("--adapt-epochs", type=float, default=10.0, help="adaptation epochs (published: 10)")
    p.add_argument("--adapt-lr", type=float, help="constant adaptation learning rate (default: the cfg's)")
    p.add_argument("--ignore-score", type=float, help="the adaptations' YOLO ignore band (darknet-kd adapt "
                   "--ignore-score); their run folders get the suffix -ignoreS")
    p.add_argument("--hpl-thresh", help="the adaptations' HPL threshold (darknet-kd adapt --hpl-thresh: a "
                   "number or 'auto', the source model's best-F1 score on D-val); run folders get -hplT")
    p.add_argument("--adapt-seeds", type=int, default=1,
                   help="adaptation seeds per source seed s: s, s+100, ... (the MT/LPLD rows average over all)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU for every run")
    p.add_argument("--json", help="default OUT/sfod.json")
    p.add_argument("--md", help="default OUT/sfod.md")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    if args.adapt_seeds < 1:
        p.error(f"--adapt-seeds must be at least 1, not {args.adapt_seeds}")
    cfg = Path(args.cfg)
    if args.preset == "mini":   # the cfg at 128x128, anchors scaled with it
        cfg = sized_cfg(cfg, 128, out, scale_anchors=True, name=f"{cfg.stem}-128.cfg")
    extra = [*(["--batch", args.batch] if args.batch else []), *(["--bf16"] if args.bf16 else []),
             "--workers", args.workers]
    suffix = (f"-ignore{args.ignore_score:g}" if args.ignore_score is not None else "") \
        + (f"-hpl{args.hpl_thresh}" if args.hpl_thresh is not None else "")
    t0 = time.time()
    rows: dict = {m: {t: [] for t in targets} for m in methods}
    audits: dict = {t: [] for t in targets}
    timings: dict = {}
    per_run: dict = {}     # MT/LPLD: one entry per (source seed, adaptation seed)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        ds = dataset(out, args.preset, seed, targets, args.workers)
        run = out / f"s{seed}"
        t = time.time()
        source = train(ds / "source.data", cfg, run / "source", seed, args.source_iterations, extra)
        timings.setdefault("source_train_s", []).append(round(time.time() - t))
        for d in targets:
            test = ds / f"{d}-test.data"
            if "source-only" in methods:
                rows["source-only"][d].append(evaluate(test, cfg, source, run / "source" / f"map-{d}.json"))
            for m in ("mt", "lpld"):
                if m not in methods:
                    continue
                for a, rd in adapt_runs(run, f"{d}-{m}{suffix}", seed, args.adapt_seeds):
                    t = time.time()
                    w = adapt(ds / f"{d}-sfod.data", cfg, source, rd, a, m, args, extra)
                    timings.setdefault(f"{m}_adapt_s", []).append(round(time.time() - t))
                    rows[m][d].append(evaluate(test, cfg, w, rd / f"map-{d}.json"))
                    per_run.setdefault(m, {}).setdefault(d, []).append({"seed": seed, "adapt_seed": a,
                                                                       "map": rows[m][d][-1]})
            if "oracle" in methods:
                t = time.time()
                w = train(ds / f"{d}-target.data", cfg, run / f"{d}-oracle", seed, args.source_iterations, extra)
                timings.setdefault("oracle_train_s", []).append(round(time.time() - t))
                rows["oracle"][d].append(evaluate(test, cfg, w, run / f"{d}-oracle" / f"map-{d}.json"))
            adapted = [run / f"{d}-{m}{suffix}" for m in ("mt", "lpld") if m in methods]
            thr = adapt_hpl_thresh(adapted[0], cfg) if adapted else PUBLISHED_HPL
            entry = {"seed": seed,
                     "source_teacher": audit(ds, d, cfg, source, run / "source" / f"audit-{d}.json", thr)}
            if "lpld" in methods:
                entry["lpld_final_teacher"] = audit(ds, d, cfg, run / f"{d}-lpld{suffix}" / f"{cfg.stem}_final.weights",
                                                    run / f"{d}-lpld{suffix}" / f"audit-{d}.json", thr)
            audits[d].append(entry)

    command = "python scripts/sfod_table.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    minutes = round((time.time() - t0) / 60, 1)
    lines = [f"`{command}` — DriveSim `{args.preset}`, {Path(args.cfg).name}"
             f"{' at 128x128' if args.preset == 'mini' else ''}, seeds {seeds[0]}..{seeds[-1]} (mean ± std), "
             f"mAP@0.5 (%) on each target's test split, {minutes} min"
             + (f"; MT and LPLD over {args.adapt_seeds} adaptation seeds per source seed "
                f"({len(seeds) * args.adapt_seeds} runs)" if args.adapt_seeds > 1 else ""), "",
             "| method | " + " | ".join(f"day → {d}" for d in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for m in methods:
        lines.append(f"| {LABELS[m]} | " + " | ".join(fmt(rows[m][d]) if rows[m][d] else "–" for d in targets) + " |")
    closed = {m: {d: gap_closed(rows, m, d) for d in targets} for m in ("mt", "lpld") if m in methods}
    for m, per in closed.items():
        if any(v is not None for v in per.values()):
            lines += ["", f"{LABELS[m]} closes " + ", ".join(f"{100 * v:.1f} % (day → {d})" for d, v in per.items()
                                                          if v is not None)
                      + " of the gap between the source-only and oracle means."]
    lines += ["", "Pseudo-label audit on the unlabelled target images against their hidden labels (IoU ≥ 0.5, "
              "same class), summed over seeds: HPL = teacher detections with score > the adaptations' HPL "
              f"threshold ({hpl_text(audits)}); LPL = the mined "
              "low-confidence candidates; *recovered* = true objects that no HPL hits but an LPL does.", "",
              "*seen* = true objects that some pre-NMS slot of score ≥ 0.01 covers (IoU ≥ 0.5, any class): the "
              "most that any pseudo-labelling can reach.", "",
              "| shift | teacher | objects | seen | HPL recall | HPL precision | LPL / image | LPL precision | recovered |",
              "|---|---|---|---|---|---|---|---|---|"]
    for d in targets:
        for who in ("source_teacher", "lpld_final_teacher"):
            es = [e[who] for e in audits[d] if who in e]
            if not es:
                continue
            s = {k: sum(e[k] for e in es) for k in ("images", "truths", "hpl", "hpl_hits", "truths_hpl", "lpl",
                                                   "lpl_hits", "recovered")}
            missed = s["truths"] - s["truths_hpl"]
            pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "–"
            seen = sum(e["seen"]["0.01"] * e["truths"] for e in es) if all("seen" in e for e in es) else None
            lines.append(f"| day → {d} | {who.replace('_', ' ')} | {s['truths']} | "
                         f"{pct(seen, s['truths']) if seen is not None else '–'} | {pct(s['truths_hpl'], s['truths'])} | "
                         f"{pct(s['hpl_hits'], s['hpl'])} | {s['lpl'] / max(s['images'], 1):.2f} | "
                         f"{pct(s['lpl_hits'], s['lpl'])} | {s['recovered']} ({pct(s['recovered'], missed)} of "
                         f"the {missed} HPL missed) |")
    md = "\n".join(lines) + "\n"
    print("\n" + md)
    table = {"command": command, "preset": args.preset, "cfg": Path(args.cfg).name, "targets": targets,
             "seeds": list(seeds), "source_iterations": args.source_iterations, "adapt_epochs": args.adapt_epochs,
             "adapt_lr": args.adapt_lr, "ignore_score": args.ignore_score, "hpl_thresh": args.hpl_thresh,
             "batch": args.batch, "adapt_seeds": args.adapt_seeds, "minutes": minutes,
             "timings_s": timings,
             "map": rows, "adapt_runs": per_run, "gap_closed": closed, "audit": audits}
    atomic_write(Path(args.json) if args.json else out / "sfod.json", json.dumps(table, indent=1) + "\n")
    atomic_write(Path(args.md) if args.md else out / "sfod.md", md)


if __name__ == "__main__":
    main()
