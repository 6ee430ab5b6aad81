"""Core ops against their peers, one run, one ratio table (Markdown, and JSON with --json).

- NMS (one image, one class, plain IoU) at 1k / 5k / 20k boxes: darknet_kd.ops.nms vs
  cv2.dnn.NMSBoxes and a vectorised PyTorch reference (blocked IoU matrix + greedy scan);
  the keep sets must be identical (checked, reported).
- kd_loss forward + backward (KL, T=2, and QFL, beta=1) at a YOLO head shape: batch 16,
  3 anchors, 52²+26²+13² cells, 80 classes, vs the eager PyTorch composite.
- With a CUDA GPU (and a CUDA build), the same on the GPU, plus GPU NMS vs the CPU kernel.

    .venv/bin/python bench/ops.py [--repeats 5] [--threads N] [--json out/bench_ops.json]

Times are medians over --repeats runs after one warm-up, in the same process.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd import ops  # noqa: E402
from darknet_kd.box import pairwise_iou  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402


def timed(fn, repeats, sync=None):
    fn()
    if sync:
        sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def detector_like_boxes(n, seed=0):
    """n candidate boxes as a detector leaves them before NMS: 70% jittered around n/20
    objects, 30% anywhere; 640x640 pixels, 8-160 px sides; distinct scores."""
    rng = np.random.default_rng(seed)
    objects = max(n // 20, 1)
    centres = rng.uniform(0, 640, (objects, 2))
    sizes = rng.uniform(8, 160, (objects, 2))
    k = int(n * 0.7)
    which = rng.integers(0, objects, k)
    near = np.concatenate([centres[which] + rng.normal(0, 1, (k, 2)) * sizes[which] * 0.15,
                           sizes[which] * rng.uniform(0.8, 1.25, (k, 2))], 1)
    far = np.concatenate([rng.uniform(0, 640, (n - k, 2)), rng.uniform(8, 160, (n - k, 2))], 1)
    boxes = np.concatenate([near, far]).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n * 0.98 + 0.01
    return torch.from_numpy(boxes), torch.from_numpy(scores)


def torch_nms(boxes, scores, thresh, block=2048):
    """Vectorised PyTorch reference: sort, the IoU > thresh matrix in row blocks (PyTorch),
    then the greedy scan as whole-row boolean ORs (NumPy: a PyTorch op per row costs more)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    n = len(b)
    over = torch.empty((n, n), dtype=torch.bool)
    for i in range(0, n, block):
        over[i:i + block] = pairwise_iou(b[i:i + block], b) > thresh
    over_np = over.numpy()
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= over_np[i]
    return order[torch.tensor(keep, dtype=torch.int64)]


def bench_nms(sizes, repeats, thresh=0.45):
    rows = []
    for n in sizes:
        boxes, scores = detector_like_boxes(n, seed=n)
        tl = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], 1).double().numpy()
        sc = scores.double().numpy()
        t_ours = timed(lambda: ops.nms(boxes, scores, thresh), repeats)
        t_cv2 = timed(lambda: cv2.dnn.NMSBoxes(tl, sc, 0.0, thresh), repeats)
        t_torch = timed(lambda: torch_nms(boxes, scores, thresh), max(1, repeats // 2))
        ours = sorted(ops.nms(boxes, scores, thresh).index.tolist())
        ref_cv2 = sorted(np.asarray(cv2.dnn.NMSBoxes(tl, sc, 0.0, thresh)).ravel().tolist())
        ref_torch = sorted(torch_nms(boxes, scores, thresh).tolist())
        rows.append({"op": "nms", "n": n, "kept": len(ours), "ms_dkd": t_ours * 1e3, "ms_cv2": t_cv2 * 1e3,
                     "ms_torch": t_torch * 1e3, "x_vs_cv2": t_cv2 / t_ours, "x_vs_torch": t_torch / t_ours,
                     "same_keep_as_cv2": ours == ref_cv2, "same_keep_as_torch": ours == ref_torch})
    return rows


def kd_eager(kind, s, t, dim, temperature=2.0, beta=1.0):
    if kind == "kl":
        per = F.kl_div(F.log_softmax(s / temperature, dim), F.softmax(t / temperature, dim),
                       reduction="none").sum(dim) * temperature ** 2
        return per.sum()
    y = torch.sigmoid(t)
    return (F.binary_cross_entropy_with_logits(s, y, reduction="none") * (torch.sigmoid(s) - y).abs().pow(beta)).sum()


def head_logits(device, batch=16, anchors=3, classes=80, cells=(52, 26, 13)):
    g = torch.Generator().manual_seed(0)
    out = []
    for c in cells:
        shape = (batch, anchors, classes, c, c)
        out.append((torch.randn(shape, generator=g).mul(3).to(device), torch.randn(shape, generator=g).mul(3).to(device)))
    return out


def bench_kd(repeats, device="cpu", sync=None):
    levels = head_logits(device)
    rows = []
    for kind in ("kl", "qfl"):
        def run(fn):
            def go():
                total = 0
                for s, t in levels:
                    sg = s.detach().requires_grad_()
                    loss = fn(sg, t)
                    loss.backward()
                    total += float(loss.detach()) if device == "cpu" else 0
            return go
        ours = run(lambda s, t: ops.kd_loss(s, t, kind=kind, dim=2, temperature=2.0))
        eager = run(lambda s, t: kd_eager(kind, s, t, 2))
        t_ours = timed(ours, repeats, sync)
        t_eager = timed(eager, repeats, sync)
        s, t = levels[0]
        diff = abs(float(ops.kd_loss(s, t, kind=kind, dim=2, temperature=2.0)) - float(kd_eager(kind, s, t, 2)))
        rows.append({"op": f"kd_loss {kind} fwd+bwd", "device": device, "elements": sum(s.numel() for s, _ in levels),
                     "ms_dkd": t_ours * 1e3, "ms_eager": t_eager * 1e3, "x_vs_eager": t_eager / t_ours,
                     "abs_loss_diff_level0": diff})
    return rows


def bench_cuda(repeats):
    sync = torch.cuda.synchronize
    rows = bench_kd(repeats, "cuda", sync)
    for n in (5000, 20000):
        boxes, scores = detector_like_boxes(n, seed=n)
        bc, sc = boxes.cuda(), scores.cuda()
        t_gpu = timed(lambda: ops.nms_mask(bc, sc, 0.45), repeats, sync)
        t_cpu = timed(lambda: ops.nms_mask(boxes, scores, 0.45), repeats)
        same = torch.equal(ops.nms_mask(bc, sc, 0.45).cpu(), ops.nms_mask(boxes, scores, 0.45))
        rows.append({"op": "nms cuda vs cpu kernel", "n": n, "ms_cuda": t_gpu * 1e3, "ms_cpu": t_cpu * 1e3,
                     "x_vs_cpu": t_cpu / t_gpu, "same_keep": same})
    return rows


def markdown(result) -> str:
    lines = [f"`{result['command']}`", "",
             f"CPU: {result['cpu']}, {result['threads']} threads, kernels {result['core']['cpu_isa']}; "
             f"GPU: {result['gpu'] or 'none available'}", "",
             "| op | size | darknet-kd ms | peer | peer ms | speed-up | same result |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["op"] == "nms":
            lines.append(f"| nms (IoU .45) | {r['n']} boxes, {r['kept']} kept | {r['ms_dkd']:.2f} | cv2.dnn.NMSBoxes | "
                         f"{r['ms_cv2']:.2f} | {r['x_vs_cv2']:.1f}x | {r['same_keep_as_cv2']} |")
            lines.append(f"| | | | PyTorch vectorised | {r['ms_torch']:.2f} | {r['x_vs_torch']:.1f}x | "
                         f"{r['same_keep_as_torch']} |")
        elif r["op"].startswith("kd_loss"):
            lines.append(f"| {r['op']} ({r['device']}) | {r['elements'] / 1e6:.1f} M logits | {r['ms_dkd']:.1f} | "
                         f"eager PyTorch | {r['ms_eager']:.1f} | {r['x_vs_eager']:.1f}x | "
                         f"loss diff {r['abs_loss_diff_level0']:.1e} |")
        else:
            lines.append(f"| {r['op']} | {r['n']} boxes | {r['ms_cuda']:.2f} | CPU kernel | {r['ms_cpu']:.2f} | "
                         f"{r['x_vs_cpu']:.1f}x | {r['same_keep']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch and core threads (default: torch's)")
    p.add_argument("--sizes", default="1000,5000,20000", help="NMS box counts")
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python bench/ops.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"$ {command}", flush=True)
    rows = bench_nms([int(s) for s in args.sizes.split(",")], args.repeats)
    rows += bench_kd(args.repeats)
    gpu = None
    if torch.cuda.is_available() and ops.core_info()["cuda_devices"]:
        gpu = torch.cuda.get_device_name()
        rows += bench_cuda(args.repeats)
    result = {"command": command.strip(), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "core": ops.core_info(), "gpu": gpu, "rows": rows}
    print(markdown(result))
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
