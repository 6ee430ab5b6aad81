"""`darknet-kd info CFG [WEIGHTS]`: Darknet's layer table and total BFLOPs."""
from __future__ import annotations

from .darknet import Darknet


def add_parser(sub):
    p = sub.add_parser("info", help="print the layer table and BFLOPs of a cfg (as Darknet does)")
    p.add_argument("cfg")
    p.add_argument("weights", nargs="?")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.set_defaults(func=run)


def run(args):
    model = Darknet.from_cfg(args.cfg, args.width, args.height)
    print(model.layer_table())
    n = sum(p.numel() for p in model.parameters())
    print(f"classes {model.num_classes}, parameters {n:,}, input {model.net.width}x{model.net.height}x{model.net.channels}")
    if args.weights:
        covered = model.load_weights(args.weights)
        print(f"weights {args.weights}: version {'.'.join(map(str, model.header))}, seen {model.seen}, "
              f"layers 0..{covered - 1} loaded")
    return 0
