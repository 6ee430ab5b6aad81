"""Write a whole DriveSim experiment folder (``darknet-kd drivesim OUT``).

Every image is one scene (its own seed: ``SeedSequence([seed, split code, index])``) in
one domain (``SeedSequence([seed, split code, index, domain code])``), so the result does
not depend on the number of worker processes and the same seed gives byte-identical
files (JPEG at fixed quality through OpenCV's libjpeg; manifest without paths or times).

Layout of OUT (``D`` is each target domain; list and .data paths are relative to OUT,
Darknet's rule when it runs in OUT, and this package's fallback from anywhere)::

    drivesim.names  manifest.json  backup/
    source/{train,val,test}/JPEGImages/*.jpg + labels/*.txt      day, source style
    D/labelled/{JPEGImages,labels}        the labelled share of the target training scenes
    D/unlabelled/JPEGImages               the rest: no labels where Darknet would look
    D/unlabelled-audit/{JPEGImages,labels}  hard links of the unlabelled images + their
                                          hidden labels (upper baseline, pseudo-label audits)
    D/{val,test}/{JPEGImages,labels}      target style in domain D
    paired/D/train/...                    the source training scenes rendered in D
                                          (GAN evaluation only, never for training)
    paired/{night,fog,rain}/test/...      the source test scenes in every other domain
    *.txt                                 image lists (see below)
    *.data                                source, source-test, D-lower, D-upper, D-target,
                                          D-test, D-sfod, paired-E-test

``.data`` files: ``source`` (train source, valid source val), ``D-lower`` (source +
labelled target), ``D-upper`` (source + all target labels), ``D-target`` (all target
labels only), ``D-test`` and ``source-test`` (valid = the test list, for the final
numbers), ``D-sfod`` (train = the unlabelled target list: source-free adaptation),
``paired-E-test`` (the source test scenes in domain E: day→E gap on identical content).
Training .data files have ``valid=`` the matching val split and ``test=`` the test split
as an extra key; target ones also carry ``unlabelled=``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...errors import DataError
from ...fileio import atomic_write
from ..darknet import label_path, write_data_file, write_labels, write_list, write_names
from .domains import DOMAINS, render_domain
from .render import MIN_BOX_AREA, MIN_BOX_PX, MIN_VISIBLE, rasterize
from .scene import CLASSES, sample_scene

VERSION = "1"
SOURCE_DOMAIN = "day"
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Preset:
    size: int                       # square images, pixels
    source: tuple                   # train, val, test scenes
    target: tuple                   # train (labelled + unlabelled), val, test scenes
    note: str


PRESETS = {
    "smoke": Preset(128, (16, 6, 6), (20, 6, 6), "a few dozen images for tests: seconds"),
    "demo": Preset(128, (800, 100, 200), (800, 100, 200), "128x128 for `make demo`'s whole pipeline on 2 cores"),
    "cpu": Preset(256, (2000, 300, 300), (2000, 300, 300),
                  "256x256 so a yolov4-tiny-class model trains in minutes on 2 cores"),
    "gpu": Preset(416, (8000, 1000, 1000), (8000, 1000, 1000), "416x416, 4x the cpu scenes, for GPU training"),
}

_SPLIT_BASE = {"train": 1, "val": 2, "test": 3}


def split_code(domain_block: str, split: str) -> int:
    """Stable integer of a split for seeding: source splits 1..3, target splits of domain
    k (index in DOMAINS) 10·k + 1..3."""
    k = 0 if domain_block == "source" else DOMAINS.index(domain_block)
    return 10 * k + _SPLIT_BASE[split]


def scene_rng(seed: int, code: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, code, index]))


def domain_rng(seed: int, code: int, index: int, domain: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, code, index, 100 + DOMAINS.index(domain)]))


def make_scene(seed: int, code: int, index: int, style: str):
    return sample_scene(scene_rng(seed, code, index), style)


def render_scene(seed: int, code: int, index: int, style: str, size: int, domains=DOMAINS):
    """One scene rendered in ``domains``: ({domain: BGR image}, labels (N, 5))."""
    L = rasterize(make_scene(seed, code, index, style), size, size)
    return {d: render_domain(L, d, domain_rng(seed, code, index, d)) for d in domains}, L.labels


def scene_labels(seed: int, code: int, index: int, style: str, size: int) -> np.ndarray:
    """The labels of a scene without rendering its colours (same boxes as the images)."""
    return rasterize(make_scene(seed, code, index, style), size, size, color=False).labels


# ---------------------------------------------------------------- workers

_W: dict = {}


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed frame buffers in this process: rendering one image
    allocates and frees ~20 MB of full-frame arrays, and with glibc's adaptive thresholds the
    freed top of the heap may be handed back to the kernel after every image and faulted in
    again by the next one (measured at 416 px: 2300 page faults and +5 ms CPU per image, a
    60 % slowdown that came and went with unrelated allocation sizes).  Fixed thresholds
    (mmap above 32 MB, trim above 64 MB free) make the cost independent of that.  For the
    DriveSim worker processes; a no-op (False) where there is no glibc mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 64 << 20))


def _init_worker(seed, size, root, own_process=True):
    cv2.setNumThreads(1)
    if own_process:
        retain_freed_memory()
    _W.update(seed=seed, size=size, root=Path(root))


def _run_job(job):
    """Render one scene in its domains and write images, labels and audit copies."""
    code, index, style, renders = job
    seed, size, root = _W["seed"], _W["size"], _W["root"]
    L = rasterize(make_scene(seed, code, index, style), size, size)
    ok, buf = None, None
    for domain, image, labelled, audit in renders:
        img = render_domain(L, domain, domain_rng(seed, code, index, domain))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise DataError("OpenCV could not encode a JPEG", root / image)
        atomic_write(root / image, buf.tobytes())
        if labelled:
            write_labels(label_path(root / image), L.labels)
        if audit:
            dst = root / audit
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst.unlink()
            try:
                os.link(root / image, dst)
            except OSError:                       # no hard links on this file system: copy
                shutil.copyfile(root / image, dst)
            write_labels(label_path(dst), L.labels)
    return L.labels, L.dropped


# ---------------------------------------------------------------- the experiment

def plan(preset: Preset, targets, target_frac: float):
    """The jobs (split code, index, style, renders) and the splits: name -> dict(images,
    domain, style, labels)."""
    jobs, splits = [], {}

    def split(name, domain, style, labels):
        splits[name] = dict(images=[], domain=domain, style=style, labels=labels)
        return splits[name]["images"]

    n_tr, n_va, n_te = preset.source
    for part, n in (("train", n_tr), ("val", n_va), ("test", n_te)):
        code = split_code("source", part)
        imgs = split(f"source-{part}", SOURCE_DOMAIN, "source", "visible")
        paired = {}
        if part == "train":
            paired = {d: split(f"paired-{d}-train", d, "source", "visible") for d in targets}
        elif part == "test":
            paired = {d: split(f"paired-{d}-test", d, "source", "visible") for d in DOMAINS if d != SOURCE_DOMAIN}
        for i in range(n):
            name = f"source-{part}-{i:06d}.jpg"
            renders = [(SOURCE_DOMAIN, f"source/{part}/JPEGImages/{name}", True, None)]
            imgs.append(renders[0][1])
            for d, lst in paired.items():
                renders.append((d, f"paired/{d}/{part}/JPEGImages/{name}", True, None))
                lst.append(renders[-1][1])
            jobs.append((code, i, "source", renders))
    t_tr, t_va, t_te = preset.target
    n_lab = int(round(target_frac * t_tr))
    for d in targets:
        lab = split(f"{d}-labelled", d, "target", "visible")
        unl = split(f"{d}-unlabelled", d, "target", "none")
        aud = split(f"{d}-unlabelled-audit", d, "target", "hidden")
        code = split_code(d, "train")
        for i in range(t_tr):
            name = f"{d}-train-{i:06d}.jpg"
            if i < n_lab:                          # scenes are i.i.d.: the first ones are a random share
                lab.append(f"{d}/labelled/JPEGImages/{name}")
                jobs.append((code, i, "target", [(d, lab[-1], True, None)]))
            else:
                unl.append(f"{d}/unlabelled/JPEGImages/{name}")
                aud.append(f"{d}/unlabelled-audit/JPEGImages/{name}")
                jobs.append((code, i, "target", [(d, unl[-1], False, aud[-1])]))
        for part, n in (("val", t_va), ("test", t_te)):
            imgs = split(f"{d}-{part}", d, "target", "visible")
            code = split_code(d, part)
            for i in range(n):
                imgs.append(f"{d}/{part}/JPEGImages/{d}-{part}-{i:06d}.jpg")
                jobs.append((code, i, "target", [(d, imgs[-1], True, None)]))
    return jobs, splits


def _data_files(targets):
    """.data name -> (train list, valid list, test list, extra keys)."""
    out = {"source": ("source-train", "source-val", "source-test", {}),
           "source-test": ("source-train", "source-test", "source-test", {})}
    for d in targets:
        ex = {"unlabelled": f"{d}-unlabelled.txt"}
        out[f"{d}-lower"] = (f"{d}-lower-train", f"{d}-val", f"{d}-test", ex)
        out[f"{d}-upper"] = (f"{d}-upper-train", f"{d}-val", f"{d}-test", ex)
        out[f"{d}-target"] = (f"{d}-train", f"{d}-val", f"{d}-test", ex)
        out[f"{d}-test"] = (f"{d}-labelled", f"{d}-test", f"{d}-test", ex)
        out[f"{d}-sfod"] = (f"{d}-unlabelled", f"{d}-val", f"{d}-test", {})
    for d in DOMAINS:
        if d != SOURCE_DOMAIN:
            out[f"paired-{d}-test"] = ("source-train", f"paired-{d}-test", f"paired-{d}-test", {})
    return out


def parse_targets(text: str) -> list[str]:
    ds = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in ds if t not in DOMAINS or t == SOURCE_DOMAIN]
    if not ds or bad or len(set(ds)) != len(ds):
        raise DataError(f"--target must be a comma-separated list of distinct domains from "
                        f"{', '.join(d for d in DOMAINS if d != SOURCE_DOMAIN)}; got {text!r}")
    return ds


def generate(out, preset="cpu", seed: int = 0, targets=("night",), target_frac: float = 0.2,
             workers: int | None = None, size: int | None = None, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write the experiment folder ``out``; returns the manifest.  ``preset`` is a name of
    :data:`PRESETS` or a :class:`Preset` (custom sizes and counts)."""
    if isinstance(preset, Preset):
        pre, preset = preset, "custom"
    elif preset in PRESETS:
        pre = PRESETS[preset]
    else:
        raise DataError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if size is not None:
        if size < 32 or size % 32:
            raise DataError(f"--size {size} must be a positive multiple of 32")
        pre = Preset(size, pre.source, pre.target, pre.note)
    if not 0.0 < target_frac < 1.0:
        raise DataError(f"--target-frac {target_frac} must lie strictly between 0 and 1")
    if isinstance(targets, str):
        targets = parse_targets(targets)
    targets = list(targets)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise DataError("folder exists and is not a DriveSim experiment; refusing to write into it", out)
        if not overwrite:
            raise DataError("a DriveSim experiment exists here (use --overwrite to replace it)", out)
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)                          # an interrupted earlier run
    tmp.mkdir(parents=True)

    jobs, splits = plan(pre, targets, target_frac)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    total = sum(len(j[3]) for j in jobs)
    results = []
    bar = tqdm(total=total, unit="img", desc=f"drivesim {preset}", disable=not progress)
    args = (seed, pre.size, str(tmp))
    cv_threads = cv2.getNumThreads()
    if workers == 1:
        _init_worker(*args, own_process=False)
        it = map(_run_job, jobs)
        pool = None
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=args)
        it = pool.imap(_run_job, jobs, chunksize=8)
    try:
        for job, res in zip(jobs, it):
            results.append(res)
            bar.update(len(job[3]))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        cv2.setNumThreads(cv_threads)

    # statistics per split: boxes per class (labels are the same in every render of a job)
    by_image = {}
    dropped = 0
    for job, (labels, n_drop) in zip(jobs, results):
        counts = np.bincount(labels[:, 0].astype(np.int64), minlength=len(CLASSES))
        dropped += n_drop
        for _, image, _, audit in job[3]:
            by_image[image] = counts
            if audit:
                by_image[audit] = counts
    # lists, names, .data files
    write_names(tmp / "drivesim.names", CLASSES)
    (tmp / "backup").mkdir(exist_ok=True)
    lists = {name: s["images"] for name, s in splits.items()}
    for d in targets:
        lists[f"{d}-train"] = lists[f"{d}-labelled"] + lists[f"{d}-unlabelled-audit"]
        lists[f"{d}-lower-train"] = lists["source-train"] + lists[f"{d}-labelled"]
        lists[f"{d}-upper-train"] = lists["source-train"] + lists[f"{d}-train"]
    for name, imgs in lists.items():
        write_list(tmp / f"{name}.txt", [tmp / p for p in imgs])
    data_files = _data_files(targets)
    for name, (train, valid, test, extra) in data_files.items():
        write_data_file(tmp / f"{name}.data", {"classes": len(CLASSES), "train": f"{train}.txt",
                                               "valid": f"{valid}.txt", "names": "drivesim.names",
                                               "backup": "backup/", "test": f"{test}.txt", **extra})
    manifest = {
        "generator": "darknet-kd drivesim", "version": VERSION, "preset": preset, "seed": seed,
        "size": [pre.size, pre.size], "target_frac": target_frac, "source_domain": SOURCE_DOMAIN,
        "target_domains": targets, "domains": list(DOMAINS), "classes": list(CLASSES),
        "counts": {"source": list(pre.source), "target": list(pre.target)},
        "image_format": f"JPEG quality {JPEG_QUALITY}",
        "label_rules": {"min_visible_fraction": MIN_VISIBLE, "min_box_side_px": MIN_BOX_PX,
                        "min_box_area_px": MIN_BOX_AREA},
        "images_written": total, "objects_dropped": int(dropped),
        "command": f"darknet-kd drivesim OUT --preset {preset} --seed {seed} --target {','.join(targets)} "
                   f"--target-frac {target_frac}" + (f" --size {size}" if size is not None else ""),
        "lists": {},
        "data_files": {name: f"{name}.data" for name in data_files},
    }
    for name, imgs in lists.items():
        s = splits.get(name, {})
        counts = sum((by_image[p] for p in imgs), np.zeros(len(CLASSES), np.int64))
        labels = s.get("labels", "visible")
        manifest["lists"][name] = {"file": f"{name}.txt", "images": len(imgs), "domain": s.get("domain", "mixed"),
                                   "style": s.get("style", "mixed"), "labels": labels,
                                   "hidden_boxes" if labels == "none" else "boxes": dict(zip(CLASSES, counts.tolist()))}
    atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest
