"""`domain-transfer`: train the unpaired GAN, translate a Darknet dataset, evaluate on DriveSim.

    domain-transfer train --source SRC.data --target TGT_LIST [--preset cpu|gpu] [options]
    domain-transfer translate CKPT SRC.data OUT
    domain-transfer eval CKPT EXPERIMENT_DIR
    domain-transfer grid CKPT SRC.data OUT.jpg [--pairs EXPERIMENT_DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from darknet_kd.cli import dispatch

from .config import PRESETS, GanConfig, preset


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _strs(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {s!r}")


HELP = {
    "ngf": "generator width (gpu 128)", "blocks": "residual blocks (gpu 9)",
    "padding": "reflect | replicate | zeros", "net_d": "discriminators: projected,patch",
    "detector_cfg": "cfg of the detector whose frozen backbone the projected D uses",
    "detector_weights": "its .weights (the source-trained detector), or 'random'",
    "proj_layers": "Darknet layer indices for the projected D (default: last layer at strides 4..32)",
    "nce_layers": "generator feature points: 0 input, 1 stem, 2-3 downsampling, 4+k block k",
    "crop": "crop side (multiple of 4)", "crop_delta": "crop side jitter",
    "iter_size": "gradient accumulation steps", "iters": "iterations to train",
    "amp": "autocast: bf16 on CPU, fp16 on CUDA (on/off)",
}


def add_train(sub):
    p = sub.add_parser("train", help="train the GAN (CUT + PatchNCE + semantic consistency)")
    p.add_argument("--source", required=True, help="source .data (labelled; its train list)")
    p.add_argument("--target", required=True,
                   help="target image list(s), comma-separated, or a .data (its train + unlabelled= lists)")
    p.add_argument("--out", default="runs/domain_transfer", help="run folder: last.ckpt, grids, history.json")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="cpu (default) or gpu (published)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--grid-every", type=int, default=500, help="write OUT/grid_NNNNNN.png every N iterations")
    p.add_argument("--pairs", default=None,
                   help="DriveSim experiment folder: adds the true target render column to the grid")
    p.add_argument("--no-target-labels", action="store_true", help="ignore target label files")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("model and loss options (default: the preset's)")
    for f in fields(GanConfig):
        flag = "--" + f.name.replace("_", "-")
        t = f.type
        kw = dict(default=None, dest=f.name, help=HELP.get(f.name))
        if t in ("int", int):
            kw["type"] = int
        elif t in ("float", float):
            kw["type"] = float
        elif t in ("bool", bool):
            kw["type"], kw["metavar"] = _bool, "on|off"
        elif t == "list[int]":
            kw["type"] = _ints
        elif t == "list[str]":
            kw["type"] = _strs
        g.add_argument(flag, **kw)
    p.set_defaults(func=run_train)


def run_train(args):
    import torch

    from .train import GanTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    explicit = {f.name: getattr(args, f.name) for f in fields(GanConfig) if getattr(args, f.name) is not None}
    if args.preset:
        # on resume, an explicit preset counts as explicit values for all its options
        explicit = {**preset(args.preset).to_dict(), **explicit} if args.resume else explicit
    # on resume the options come from the checkpoint; explicit ones are checked against it
    cfg = None if args.resume else preset(args.preset or "cpu", **explicit)
    pairs = None
    if args.pairs:
        from .evaluate import drivesim_pairs
        pairs = dict(drivesim_pairs(args.pairs))
    trainer = GanTrainer(args.source, args.target, args.out, cfg, device=args.device, resume=args.resume,
                         save_every=args.save_every, grid_every=args.grid_every, pairs=pairs,
                         use_target_labels=not args.no_target_labels, progress=not args.no_progress,
                         explicit=explicit)
    summary = trainer.run()
    print(json.dumps(summary, indent=1, default=str))
    return 0


def add_translate(sub):
    p = sub.add_parser("translate", help="translate a Darknet dataset with a trained generator")
    p.add_argument("ckpt")
    p.add_argument("data", help="source .data")
    p.add_argument("out", help="output folder (a complete Darknet dataset)")
    p.add_argument("--lists", type=_strs, default=None, help="lists to translate (default: train,valid,test present)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    p.add_argument("--tile", type=int, default=1024, help="translate larger images in tiles of this side (0: never)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CPU / fp16 on CUDA")
    p.add_argument("--overwrite", action="store_true", help="replace a translation made with another checkpoint")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_translate)


def run_translate(args):
    import torch

    from .translate import translate_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    s = translate_dataset(args.ckpt, args.data, args.out, args.lists, not args.no_ema, args.tile, args.amp,
                          args.overwrite, args.device, not args.no_progress)
    print(f"{s['data']}: {s['translated']} images translated, {s['skipped']} already done, {s['images']} in all")
    if s["dropped_keys"]:
        print(f"note: .data keys not carried over: {', '.join(s['dropped_keys'])}")
    return 0


def add_grid(sub):
    p = sub.add_parser("grid", help="picture of a checkpoint's translations: source | translated | "
                                    "generated share | (--pairs) the true target render")
    p.add_argument("ckpt")
    p.add_argument("data", help="source .data (images from its --list)")
    p.add_argument("out", help="picture to write (.jpg or .png)")
    p.add_argument("--list", default="train", help="list of the .data to take images from")
    p.add_argument("--first", type=int, default=0, help="index of the first image in the list")
    p.add_argument("--images", type=int, default=4, help="rows")
    p.add_argument("--size", type=int, default=0, help="longer image side (default: twice the training crop)")
    p.add_argument("--pairs", default=None, help="DriveSim experiment folder: add the true target render")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_grid)


def run_grid(args):
    import torch

    from darknet_kd.errors import DataError

    from .data import source_images
    from .train import grid_image, write_grid
    from .translate import load_generator

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G, cfg, _ = load_generator(args.ckpt, not args.no_ema, device)
    data_cfg, images, _ = source_images(args.data, args.list)
    if not 0 <= args.first < len(images) or args.images < 1:
        raise DataError(f"--first {args.first} --images {args.images}: the {args.list} list has "
                        f"{len(images)} images", data_cfg.resolve(args.list))
    pairs = None
    if args.pairs:
        from .evaluate import drivesim_pairs
        pairs = dict(drivesim_pairs(args.pairs))
    grid = grid_image(G, images[args.first:args.first + args.images], args.size or 2 * cfg.crop, pairs, device)
    print(write_grid(args.out, grid))
    return 0


def add_eval(sub):
    from .evaluate import add_parser
    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="domain-transfer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(sub)
    add_translate(sub)
    add_eval(sub)
    add_grid(sub)
    return p


def main(argv=None) -> int:
    return dispatch("domain-transfer", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
