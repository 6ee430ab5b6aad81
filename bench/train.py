"""Training throughput: images/s (forward + backward + SGD step) and peak RSS for a
Darknet model, fp32 and bf16 autocast, against plain PyTorch with the same network as
the floor (the same convolutions as an nn.Sequential-style module with PyTorch's own
BatchNorm and a trivial loss: what the arithmetic alone costs).

    .venv/bin/python bench/train.py [--cfg cfg/yolov4-tiny.cfg] [--size 416] [--batch 16] [--iters 5]

Each configuration runs in its own process (peak RSS is per process); one run, one table
(Markdown + JSON).  Ratios compare configurations measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plain_pytorch(model):
    """The same network as a plain PyTorch module: nn.Conv2d + nn.BatchNorm2d + activation,
    routes/shortcuts/upsample/maxpool inline.  No Darknet semantics (PyTorch BN, no decode)."""
    import torch.nn as nn
    import torch.nn.functional as F

    from darknet_kd.model import layers as L

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.specs = []
            mods = []
            for m in model.layers:
                if isinstance(m, L.Convolutional):
                    c = m.conv
                    seq = [nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                                     groups=c.groups, bias=m.bn is None)]
                    if m.bn is not None:
                        seq.append(nn.BatchNorm2d(c.out_channels))
                    mods.append(nn.Sequential(*seq))
                    self.specs.append(("conv", m.act_name))
                else:
                    mods.append(nn.Identity())
                    self.specs.append((m.kind, m))
            self.mods = nn.ModuleList(mods)

        def forward(self, x):
            outs, heads = [], []
            for mod, (kind, a) in zip(self.mods, self.specs):
                if kind == "conv":
                    x = mod(x)
                    x = F.leaky_relu(x, 0.1) if a == "leaky" else (F.mish(x) if a == "mish" else x)
                elif kind == "max":
                    x = a(x)
                elif kind == "route":
                    x = a(dict(enumerate(outs)))
                elif kind == "shortcut":
                    x = x + outs[a.source]
                elif kind == "upsample":
                    x = F.interpolate(x, scale_factor=a.stride, mode="nearest")
                elif kind == "yolo":
                    heads.append(x)
                outs.append(x)
            return heads

    return Plain()


def worker(args):
    import torch

    torch.set_num_threads(args.threads)
    from darknet_kd.loss.yolo import YoloLoss
    from darknet_kd.model import Darknet
    from darknet_kd.train.schedule import darknet_sgd

    model = Darknet.from_cfg(args.cfg, args.size, args.size).train()
    x = torch.rand(args.batch, 3, args.size, args.size)
    g = torch.Generator().manual_seed(0)
    n = 6 * args.batch
    targets = torch.cat([torch.randint(0, args.batch, (n, 1), generator=g).float(),
                         torch.randint(0, model.num_classes, (n, 1), generator=g).float(),
                         0.2 + 0.6 * torch.rand(n, 2, generator=g), 0.05 + 0.3 * torch.rand(n, 2, generator=g)], 1)
    if args.impl == "plain":
        net = plain_pytorch(model).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

        def loss_fn():
            return sum((h.float() ** 2).mean() for h in net(x))
    else:
        net = model
        crit = YoloLoss(model)
        opt = darknet_sgd(model, model.net)

        def loss_fn():
            return crit([h.float().contiguous() for h in model(x)], targets, (args.size, args.size))[0] / args.batch

    if not args.nchw:  # the trainer's default layout (and the fair floor for plain PyTorch)
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(args.iters):
        step()
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": args.impl, "dtype": args.dtype, "images_per_s": args.batch * args.iters / dt,
                      "peak_rss_mb": rss}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov4-tiny.cfg"))
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--nchw", action="store_true", help="NCHW activations (default channels-last, as the trainer)")
    p.add_argument("--json", help="also write the table as JSON here")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.impl, args.dtype = args.worker
        return worker(args)
    rows = []
    for impl in ("darknet-kd", "plain"):
        for dtype in ("fp32", "bf16"):
            cmd = [sys.executable, __file__, "--cfg", args.cfg, "--size", str(args.size), "--batch", str(args.batch),
                   "--iters", str(args.iters), "--threads", str(args.threads), "--worker", impl, dtype]
            cmd += ["--nchw"] if args.nchw else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    floor = {r["dtype"]: r["images_per_s"] for r in rows if r["impl"] == "plain"}
    cmd = "python bench/train.py " + " ".join(sys.argv[1:])
    print(f"\n`{cmd}` — {Path(args.cfg).name} at {args.size}, batch {args.batch}, {args.threads} threads, "
          f"{args.iters} timed steps, {'NCHW' if args.nchw else 'channels-last'}\n")
    print("| implementation | dtype | images/s (fwd+bwd+step) | vs plain PyTorch | peak RSS MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['dtype']} | {r['images_per_s']:.1f} | {r['images_per_s'] / floor[r['dtype']]:.2f}x "
              f"| {r['peak_rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
