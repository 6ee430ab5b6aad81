"""`domain-transfer translate CKPT SRC.data OUT`: a complete Darknet dataset of translated images.

For every list of SRC.data (``train``, ``valid``, ``test`` that exist, or ``--lists``), each
image is translated at full resolution by the generator (the EMA generator unless
``--no-ema``; images larger than ``--tile`` are translated in overlapping tiles blended with
linear ramps) and written to ``OUT/images/<path relative to the source images' common
folder>`` with the source extension; its label file (Darknet's image -> label rule) is a
byte copy of the source label file (validated first), so boxes are unchanged.  OUT gets the
list files (``train.txt``, ...), a copy of the names file, a ``backup/`` folder and
``OUT/<SRC stem>.data``.

Resumable: labels are written before their image and every file goes through a temporary
name, so an image that exists is complete; a rerun skips it.  ``OUT/translate.json``
records the checkpoint (SHA-256) and options: a rerun with another checkpoint is refused
unless ``--overwrite``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from darknet_kd.data.darknet import label_path, read_data_file, read_labels, write_data_file, write_list
from darknet_kd.errors import DataError
from darknet_kd.fileio import atomic_path, atomic_write
from darknet_kd.train.checkpoint import load_checkpoint

from .config import ConfigError
from .data import read_image, to_image, to_tensor
from .train import build_generator, check_checkpoint, file_sha256, load_module

LIST_KEYS = ("train", "valid", "test")


def load_generator(ckpt_path, ema: bool = True, device="cpu"):
    """(generator in eval mode, GanConfig, checkpoint dict) from a domain-transfer checkpoint."""
    ck = load_checkpoint(ckpt_path)
    cfg = check_checkpoint(ck, ckpt_path)
    G = build_generator(cfg)
    key = "G_ema" if ema and "G_ema" in ck else "G"
    load_module(G, ck[key], "generator", ckpt_path)
    return G.to(device).eval(), cfg, ck


def _ramp(n: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    w = torch.ones(n)
    r = torch.linspace(0, 1, overlap + 2)[1:-1] if overlap else torch.zeros(0)
    if not first and overlap:
        w[:overlap] = r
    if not last and overlap:
        w[-overlap:] = r.flip(0)
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    s = list(range(0, size - tile, step))
    return s + [size - tile]


@torch.no_grad()
def translate_tensor(G, x: torch.Tensor, tile: int = 0, overlap: int = 32, amp: bool = False) -> torch.Tensor:
    """G(x) for x (1, 3, H, W) in [-1, 1].  With ``tile`` > 0 and a side larger than ``tile``,
    overlapping tiles (``overlap`` px, linear blending) keep memory bounded; instance
    normalisation then sees each tile's statistics, so tiles are a memory fallback, not the
    default."""
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16 if x.device.type == "cpu" else torch.float16) \
        if amp else torch.autocast(x.device.type, enabled=False)
    H, W = x.shape[-2:]
    with ctx:
        if not tile or (H <= tile and W <= tile):
            return G(x).float()
        overlap = min(overlap, tile // 2)
        out = torch.zeros_like(x, dtype=torch.float32)
        norm = torch.zeros((1, 1, H, W), device=x.device)
        ys, xs = _starts(H, tile, overlap), _starts(W, tile, overlap)
        for y in ys:
            for x0 in xs:
                th, tw = min(tile, H), min(tile, W)
                t = G(x[..., y:y + th, x0:x0 + tw]).float()
                wy = _ramp(th, overlap, y == ys[0], y == ys[-1]).to(x.device)
                wx = _ramp(tw, overlap, x0 == xs[0], x0 == xs[-1]).to(x.device)
                w = (wy[:, None] * wx[None, :])[None, None]
                out[..., y:y + th, x0:x0 + tw] += t * w
                norm[..., y:y + th, x0:x0 + tw] += w
        return out / norm


def translate_file(G, src, dst, device="cpu", tile=0, amp=False) -> None:
    img = read_image(src)
    out = translate_tensor(G, to_tensor(img)[None].to(device), tile, amp=amp)
    bgr = cv2.cvtColor(to_image(out[0]), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if Path(dst).suffix.lower() in (".jpg", ".jpeg") else []
    with atomic_path(dst) as tmp:
        if not cv2.imwrite(str(tmp), bgr, params):
            raise DataError("OpenCV cannot write the translated image", dst)


def translate_dataset(ckpt, src_data, out_dir, lists=None, ema=True, tile=1024, amp=False, overwrite=False,
                      device=None, progress=True) -> dict:
    """Translate the lists of ``src_data`` into a Darknet dataset at ``out_dir``; returns a summary."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir).absolute()   # lists then hold paths relative to their own folder, not to the cwd
    src = read_data_file(src_data)
    keys = list(lists) if lists else [k for k in LIST_KEYS if src.get(k) is not None]
    for k in keys:
        if src.get(k) is None:
            raise DataError(f"no '{k}=' list to translate", src.path)
    images = {k: src.images(k) for k in keys}
    for k, imgs in images.items():  # validate every label file before writing anything
        for p in imgs:
            read_labels(label_path(p), src.classes)

    G, _, _ = load_generator(ckpt, ema, device)  # a clear CheckpointError before anything else
    stamp = {"checkpoint": str(Path(ckpt).resolve()), "sha256": file_sha256(ckpt), "ema": bool(ema),
             "source": str(Path(src_data).resolve())}
    stamp_path = out / "translate.json"
    every = sorted({str(Path(p).resolve()) for imgs in images.values() for p in imgs})
    common = Path(os.path.commonpath(every)) if len(every) > 1 else Path(every[0]).parent
    if common.as_posix() in every:  # a single image
        common = common.parent
    dst_of = {p: out / "images" / Path(p).relative_to(common) for p in every}

    if stamp_path.exists():
        try:
            old = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or any(old.get(k) != stamp[k] for k in ("sha256", "ema", "source")):
            if not overwrite:
                raise ConfigError("this folder holds a translation made with another checkpoint, source or --ema "
                                  "setting; pass --overwrite to replace it", stamp_path)
            for d in dst_of.values():  # only the files this translation writes
                if d.exists():
                    d.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(stamp_path, json.dumps(stamp, indent=1))

    done = skipped = 0
    t_translate = 0.0
    for p in tqdm(every, desc="translate", unit="img", disable=not progress, dynamic_ncols=True):
        dst = dst_of[p]
        src_label, dst_label = label_path(p), label_path(dst)
        if dst.exists() and (dst_label.exists() or not src_label.exists()):
            skipped += 1
            continue
        if src_label.exists():
            atomic_write(dst_label, src_label.read_bytes())
        elif dst_label.exists():
            dst_label.unlink()
        t0 = time.perf_counter()
        translate_file(G, p, dst, device, tile, amp)
        t_translate += time.perf_counter() - t0
        done += 1

    data = {"classes": src.classes}
    for k in keys:
        write_list(out / f"{k}.txt", [dst_of[str(Path(p).resolve())] for p in images[k]])
        data[k] = out / f"{k}.txt"
    if src.names is not None:
        names_src = src.resolve("names")
        atomic_write(out / names_src.name, names_src.read_bytes())
        data["names"] = out / names_src.name
    (out / "backup").mkdir(exist_ok=True)
    data["backup"] = out / "backup"
    data_path = out / f"{Path(src_data).stem}.data"
    write_data_file(data_path, data)
    dropped = [k for k, _ in src.items() if k not in (*LIST_KEYS, "classes", "names", "backup")]
    return {"data": str(data_path), "translated": done, "skipped": skipped, "images": len(every),
            "seconds_translating": t_translate, "dropped_keys": dropped}


__all__ = ["load_generator", "translate_tensor", "translate_file", "translate_dataset"]
