"""mAP of the compiled engine (dkd, fp32 and bf16) against `darknet-kd map` (PyTorch) on the
same .data / cfg / weights: Darknet's validate_detector_map (detection threshold .005, NMS
.45, the report of darknet_kd.eval.voc_map) with the detections from darknet_kd.engine.Net.

    .venv/bin/python scripts/engine_map.py DATA CFG WEIGHTS [--json docs/engine_map.json]

Prints one table (Markdown; JSON with --json) and the command.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.darknet import label_path, read_data_file  # noqa: E402
from darknet_kd.data.dataset import load_all_labels  # noqa: E402
from darknet_kd.engine import Net  # noqa: E402
from darknet_kd.eval.evaluate import DET_THRESH, NMS_THRESH, evaluate  # noqa: E402
from darknet_kd.eval.voc_map import DarknetMap  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.model import load  # noqa: E402


def engine_map(data, cfg, weights, bf16: bool):
    net = Net(cfg, weights, bf16=bf16)
    images = data.images("valid")
    labels = load_all_labels(images, data.classes)
    acc = DarknetMap(data.classes, 0.5, 0.25)
    for path, truth in tqdm(list(zip(images, labels)), desc=f"dkd {net.precision}", unit="img", file=sys.stderr):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        dets = net.detect(rgb, DET_THRESH, NMS_THRESH)
        boxes, probs, index = [], [], {}
        for d in dets:  # (box, class) pairs -> Darknet's dense rows, one per NMS survivor
            if d.box_index not in index:
                index[d.box_index] = len(boxes)
                boxes.append(d.box)
                probs.append(np.zeros(data.classes, np.float32))
            probs[index[d.box_index]][d.class_id] = d.prob
        acc.add_image(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(probs, np.float32).reshape(-1, data.classes),
                      truth, None, source=label_path(path))
    return net.precision, acc.result(0, data.class_names())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("cfg")
    p.add_argument("weights")
    p.add_argument("--json")
    args = p.parse_args(argv)
    command = "python scripts/engine_map.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"$ {command}")
    data = read_data_file(args.data)
    ref = evaluate(load(args.cfg, args.weights), data, workers=0).darknet
    rows = [("darknet-kd map (PyTorch fp32)", ref.map)]
    for bf16 in (False, True):
        prec, res = engine_map(data, args.cfg, args.weights, bf16)
        rows.append((f"dkd {prec}", res.map))
    md = ["| run | mAP@0.5 (%) | difference (points) |", "|---|---:|---:|"]
    md += [f"| {name} | {100 * m:.2f} | {100 * (m - ref.map):+.2f} |" for name, m in rows]
    text = f"`{command}`\n\n" + "\n".join(md) + "\n"
    print(text)
    if args.json:
        atomic_write(args.json, json.dumps({"command": command, "data": args.data, "cfg": args.cfg,
                                            "weights": args.weights,
                                            "rows": [{"run": n, "map": m} for n, m in rows]}, indent=1) + "\n")
        atomic_write(Path(args.json).with_suffix(".md"), text)


if __name__ == "__main__":
    main()
