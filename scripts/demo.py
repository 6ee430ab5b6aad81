"""`make demo`: the main job of darknet-kd, in small, on 2 CPU cores.

Every step is a command a user would type; each is printed before it runs, with its time.

1. The whole GAN + teacher-distillation pipeline at the ``demo`` preset
   (``scripts/kd_table.py --preset demo``, which writes ``OUT/seed0/experiment.ini`` and runs
   ``darknet-kd pipeline`` on it): DriveSim day → night (128 px) → GAN → translated source →
   teacher → pseudo-labels → students (lower, upper, proposed = GAN + CrossKD) → the mAP@0.5 table.
2. Drawn detections of the lower baseline and of the final (proposed) student on night test
   images (``darknet-kd detect --out``), side by side in ``OUT/demo_detections.jpg``.
3. The table, the time of every pipeline stage, wall and CPU time and the load average.

    .venv/bin/python scripts/demo.py [--out runs/demo] [--preset demo] [--sheet docs/demo_detections.jpg]

A killed demo resumes where it stopped (run it again); a finished one only redraws and reprints.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from darknet_kd.fileio import atomic_path  # noqa: E402

SAMPLES = 6          # night test images drawn
SCALE = 2            # the sheet's upscaling (nearest) of the 128-px scenes


def short(cmd: str) -> str:
    return cmd.replace(str(ROOT) + "/", "").replace(str(BIN) + "/", "")


def run(cmd: list, log: list, quiet: bool = False) -> float:
    cmd = [str(c) for c in cmd]
    print(f"\n$ {short(shlex.join(cmd))}", flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL if quiet else None)
    dt = time.time() - t
    log.append((short(shlex.join(cmd)), dt))
    print(f"[{dt:.0f} s]", flush=True)
    return dt


def sheet(folders: dict, names: list[str], dest: Path) -> None:
    """One row per model (its name on the left), one column per image, upscaled ``SCALE``x."""
    import cv2
    import numpy as np

    rows = []
    for title, folder in folders.items():
        tiles = [cv2.imread(str(folder / f"{n}.jpg"), cv2.IMREAD_COLOR) for n in names]
        tiles = [cv2.resize(t, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST) for t in tiles]
        h = tiles[0].shape[0]
        label = np.full((h, 150, 3), 255, np.uint8)
        for k, line in enumerate(title.split("\n")):
            cv2.putText(label, line, (6, h // 2 - 8 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
        gap = np.full((h, 4, 3), 255, np.uint8)
        rows.append(np.hstack([label] + [x for t in tiles for x in (t, gap)]))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    with atomic_path(dest) as tmp:
        cv2.imwrite(str(tmp), np.vstack(rows[:-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    p.add_argument("--preset", default="demo", help="scripts/kd_table.py preset (demo: ≤ 20 min on 2 cores)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: the data loader's 2 workers share the other core; two OpenMP "
                        "threads on a busy 2-core machine made the GAN stage ~5x slower)")
    p.add_argument("--sheet", help="also copy the drawn detections sheet here (e.g. docs/demo_detections.jpg)")
    args = p.parse_args()
    out = Path(args.out).absolute()
    log: list = []
    load0, t0 = os.getloadavg(), time.time()
    run([BIN / "python", ROOT / "scripts" / "kd_table.py", "--preset", args.preset, "--seeds", "1", "--out", out,
         "--threads", args.threads], log)
    work = out / "seed0" / "work"
    table = json.loads((work / "table.json").read_text())
    trained = [r for r in table["rows"] if r != "teacher"]
    final = "proposed" if "proposed" in trained else trained[-1]
    ds = work / "data"
    cfg = work / "cfg" / "yolov4-tiny-drivesim.cfg"
    if not cfg.exists():                      # a preset without [experiment] size trains the cfg as shipped
        cfg = ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"
    images = (ds / "night-test.txt").read_text().split()[:SAMPLES]
    sample = out / "night-samples.txt"
    sample.write_text("\n".join(str(ds / i) if not os.path.isabs(i) else i for i in images) + "\n")
    drawn = {}
    for row in dict.fromkeys(("lower", final)):
        if row not in trained:
            continue
        folder = out / "detections" / row
        run([BIN / "darknet-kd", "detect", ds / "night-test.data", cfg,
             work / "students" / row / f"{cfg.stem}_final.weights", sample, "--out", folder, "--quiet"], log)
        drawn[f"{row}\nnight {100 * table['rows'][row]['target']:.1f} mAP"] = folder
    dest = out / "demo_detections.jpg"
    sheet(drawn, [Path(i).stem for i in images], dest)
    if args.sheet:
        with atomic_path(Path(args.sheet)) as tmp:
            tmp.write_bytes(dest.read_bytes())
    total = time.time() - t0
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime
    load1 = os.getloadavg()

    print("\n## darknet-kd demo\n")
    print(f"`python scripts/demo.py {' '.join(sys.argv[1:])}` — {total / 60:.1f} min wall on {os.cpu_count()} "
          f"cores, {cpu_s / 60:.1f} min CPU (user + sys, all processes; {cpu_s / 60 / (os.cpu_count() or 1):.1f} "
          f"min per core); load average {load0[0]:.1f} before, {load1[0]:.1f} after\n")
    print((work / "table.md").read_text())
    audit = json.loads((work / "pseudo_audit.json").read_text())
    a = audit["audit"]
    print(f"Pseudo-labels (threshold {audit['threshold']['thresh']}, best F1 on night val): precision "
          f"{a['precision']:.3f}, recall {a['recall']:.3f} against the hidden labels of {a['images']} images.\n")
    print("| stage | seconds |\n|---|---|")
    for m in sorted((work / "stages").glob("*.json"), key=lambda m: m.stat().st_mtime):
        s = json.loads(m.read_text())
        print(f"| {s['stage']} | {s['seconds']:.0f} |")
    print("\n| command | seconds |\n|---|---|")
    for cmd, dt in log:
        print(f"| `{cmd}` | {dt:.0f} |")
    print(f"\nDrawn detections: {out / 'detections'}; side by side: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
