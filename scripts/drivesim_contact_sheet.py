"""DriveSim contact sheet: the same scenes in day, night, fog and rain, boxes drawn.

    .venv/bin/python scripts/drivesim_contact_sheet.py [--out docs/drivesim_contact_sheet.jpg]
        [--seed 0] [--size 256] [--rows 4]

Rows alternate the source style (top: a European-looking city) and the target style
(other paint, yellow horizontal traffic lights, diamond signs, double-deckers); every
column is one domain of the same scene, so the boxes are identical along a row.  Box
colours follow the class legend at the bottom.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.data.drivesim import CLASSES, DOMAINS, render_scene, split_code  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402

COLOURS = [(60, 220, 60), (0, 160, 255), (255, 120, 0), (60, 60, 255), (255, 0, 200), (0, 255, 255),
           (255, 255, 255)]                                   # BGR, one per class


def _label(img, text, org, scale=0.45):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def sheet(seed: int, size: int, rows: int) -> np.ndarray:
    tiles = []
    for r in range(rows):
        style = "source" if r % 2 == 0 else "target"
        block = "source" if style == "source" else "night"
        imgs, labels = render_scene(seed, split_code(block, "test"), r, style, size)
        row = []
        for d in DOMAINS:
            im = imgs[d].copy()
            for c, x, y, w, h in labels:
                p0 = (int(round((x - w / 2) * size)), int(round((y - h / 2) * size)))
                p1 = (int(round((x + w / 2) * size)) - 1, int(round((y + h / 2) * size)) - 1)
                cv2.rectangle(im, p0, p1, COLOURS[int(c)], 1)
            _label(im, f"{d} ({style} style)" if d == "day" else d, (6, 16))
            row.append(im)
        tiles.append(np.hstack(row))
    body = np.vstack(tiles)
    legend = np.full((24, body.shape[1], 3), 30, np.uint8)
    x = 6
    for c, name in enumerate(CLASSES):
        cv2.rectangle(legend, (x, 7), (x + 12, 18), COLOURS[c], -1)
        _label(legend, name, (x + 16, 17), 0.42)
        x += 30 + 9 * len(name)
    return np.vstack([body, legend])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "drivesim_contact_sheet.jpg"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--quality", type=int, default=85)
    args = ap.parse_args(argv)
    img = sheet(args.seed, args.size, args.rows)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    atomic_write(args.out, buf.tobytes())
    print(f"wrote {args.out}: {img.shape[1]}x{img.shape[0]}, {len(buf) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
