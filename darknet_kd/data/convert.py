"""Converters to Darknet datasets (``darknet-kd convert {voc,coco,bdd100k} SRC OUT``) and
the way back to COCO JSON (:func:`to_coco`, for pycocotools evaluation).

Output layout (the same for every source, in OUT)::

    JPEGImages/<name>     the images: symbolic links to the originals (``--copy`` copies)
    labels/<name>.txt     Darknet labels (Darknet's /JPEGImages/ -> /labels/ rule)
    difficult/<name>.txt  objects the evaluator ignores: VOC ``difficult``, COCO ``iscrowd``
    <split>.txt           image list (paths relative to OUT)
    <split>_difficult.txt Darknet's ``difficult=`` list, parallel to <split>.txt: entries
                          ``difficult/<name>.jpg`` whose label files hold the ignored objects
    classes.names         class names
    <split>.data          classes, train= and valid= both <split>.txt, names, backup,
                          difficult (edit train/valid to combine splits)

Run Darknet from OUT (the paths are relative to it); here they work from anywhere.

Class names: ``--names FILE`` fixes the classes and their order; objects of other classes
are dropped and counted in the printed summary.  Without it an existing
OUT/classes.names is reused (so several splits converted into one OUT agree); else the
classes come from the source (VOC: sorted names, COCO: categories sorted by id, BDD100K:
sorted categories) and an object outside them is an error.

Box conventions: VOC ``bndbox`` values are 1-based pixel indices, inclusive: the box is
the continuous range [xmin-1, xmax] (as Detectron's VOC->COCO conversion; Darknet's
voc_label.py uses [xmin-1, xmax-1], one pixel narrower).  COCO ``bbox`` [x, y, w, h] and
BDD100K ``box2d`` x1, y1, x2, y2 are continuous pixel coordinates.  Boxes are clipped to
the image (counted); a box empty after clipping is an error.  Labels keep float64
precision, so :func:`to_coco` gives back the same pixel boxes (rounded to 1e-6 px).

COCO ``iscrowd=1`` boxes cannot be trained on; they go to the difficult sidecar, which
the Darknet-style mAP ignores, and :func:`to_coco` exports sidecar boxes with
``iscrowd=1`` (pycocotools' way to ignore a ground truth), so crowd boxes survive a round
trip and VOC difficult objects become ignore regions.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..fileio import atomic_write
from .check import image_size
from .darknet import (DataConfig, label_path, read_data_file, read_labels, read_list, read_names,
                      write_data_file, write_labels, write_list, write_names)

NAMES_FILE = "classes.names"
_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tiff"}


# ---------------------------------------------------------------- the common writer

class _Writer:
    """Collects images and boxes of one split and writes the Darknet layout."""

    def __init__(self, out, split: str, names: list[str] | None, names_fixed: bool, copy: bool):
        self.out, self.split, self.copy = Path(out), split, copy
        self.names = names
        self.names_fixed = names_fixed  # objects of other classes are dropped (else an error)
        self.items = []  # (src, name, labels, difficult)
        self.dropped = Counter()
        self.clipped = 0

    def class_index(self, name: str, where, path):
        if name in self.index:
            return self.index[name]
        if self.names_fixed:
            self.dropped[name] += 1
            return None
        raise DataError(f"{where}: class {name!r} is not in {self.out / NAMES_FILE} (pass --names to select classes)",
                        path)

    def set_names(self, names):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    def boxes(self, boxes, w: int, h: int, where: list[str], path):
        """Pixel boxes (N, 4) x1 y1 x2 y2 -> (N, 4) relative cx cy w h, clipped to the image."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        c = b.copy()
        c[:, [0, 2]] = c[:, [0, 2]].clip(0, w)
        c[:, [1, 3]] = c[:, [1, 3]].clip(0, h)
        self.clipped += int((c != b).any(1).sum())
        for k in np.nonzero((c[:, 2] <= c[:, 0]) | (c[:, 3] <= c[:, 1]))[0]:
            raise DataError(f"{where[k]}: box {b[k].tolist()} is empty inside the {w}x{h} image", path)
        return np.stack([(c[:, 0] + c[:, 2]) / 2 / w, (c[:, 1] + c[:, 3]) / 2 / h,
                         (c[:, 2] - c[:, 0]) / w, (c[:, 3] - c[:, 1]) / h], 1)

    def add(self, src: Path, name: str, cls, rel, dif_cls, dif_rel):
        ext = Path(name).suffix
        if ext.lower() not in _EXTS or ext not in (ext.lower(), ext.upper()):
            raise DataError(f"image extension {ext!r} is not one Darknet reads labels for "
                            "(.jpg .jpeg .png .bmp .ppm .tiff, lower or upper case)", src)
        lab = np.concatenate([np.asarray(cls, np.float64).reshape(-1, 1), np.reshape(rel, (-1, 4))], 1)
        dif = np.concatenate([np.asarray(dif_cls, np.float64).reshape(-1, 1), np.reshape(dif_rel, (-1, 4))], 1)
        self.items.append((Path(src), name, lab, dif))

    def write(self, with_difficult: bool):
        out = self.out
        names_path = out / NAMES_FILE
        if not names_path.exists() or read_names(names_path) != self.names:
            write_names(names_path, self.names)
        images, difs = [], []
        for src, name, lab, dif in tqdm(self.items, desc=f"write {self.split}", unit="img", leave=False,
                                        disable=len(self.items) < 500):
            dst = out / "JPEGImages" / name
            _link_or_copy(src, dst, self.copy)
            write_labels(label_path(dst), lab)
            images.append(dst)
            if with_difficult:
                dp = out / "difficult" / name
                write_labels(label_path(dp), dif)
                difs.append(dp)
        write_list(out / f"{self.split}.txt", images)
        data = {"classes": len(self.names), "train": f"{self.split}.txt", "valid": f"{self.split}.txt",
                "names": NAMES_FILE, "backup": "backup"}
        if with_difficult:
            write_list(out / f"{self.split}_difficult.txt", difs)
            data["difficult"] = f"{self.split}_difficult.txt"
        (out / "backup").mkdir(exist_ok=True)
        write_data_file(out / f"{self.split}.data", data)

    def summary(self) -> str:
        n = sum(len(i[2]) for i in self.items)
        d = sum(len(i[3]) for i in self.items)
        s = (f"{self.split}: {len(self.items)} images, {n} boxes, {d} ignored (difficult/crowd) boxes, "
             f"{len(self.names)} classes -> {self.out / (self.split + '.data')}")
        if self.clipped:
            s += f"\n  {self.clipped} boxes clipped to their image"
        if self.dropped:
            s += "\n  dropped (class not in names): " + ", ".join(f"{k} {v}" for k, v in self.dropped.most_common())
        return s


def _link_or_copy(src: Path, dst: Path, copy: bool):
    """Place ``src`` at ``dst`` through a temporary name (atomic)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        if copy:
            shutil.copyfile(src, tmp)
        else:
            os.symlink(Path(src).resolve(), tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def _start(out, split, names_file, copy) -> _Writer:
    out = Path(out)
    if names_file is not None:
        w = _Writer(out, split, None, True, copy)
        w.set_names(read_names(names_file))
        return w
    w = _Writer(out, split, None, False, copy)
    if (out / NAMES_FILE).exists():
        w.set_names(read_names(out / NAMES_FILE))
    return w


def _load_json(path):
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("annotation file not found", path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    except UnicodeDecodeError:
        raise DataError("annotation file is not UTF-8 JSON", path) from None


def _num(v, what, where, path) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise DataError(f"{where}: {what} must be a finite number, got {v!r}", path)
    return float(v)


# ---------------------------------------------------------------- VOC

def _voc_text(el, tag, where, path) -> str:
    t = el.find(tag)
    if t is None or t.text is None or not t.text.strip():
        raise DataError(f"{where}: missing <{tag}>", path)
    return t.text.strip()


def _voc_float(el, tag, where, path) -> float:
    s = _voc_text(el, tag, where, path)
    try:
        v = float(s)
    except ValueError:
        raise DataError(f"{where}: <{tag}> {s!r} is not a number", path) from None
    if not np.isfinite(v):
        raise DataError(f"{where}: <{tag}> {s!r} is not finite", path)
    return v


def convert_voc(src, out, names=None, copy=False, splits=None) -> list[_Writer]:
    """PASCAL VOC folder (Annotations/, ImageSets/Main/, JPEGImages/) -> Darknet, one list
    per split file of ImageSets/Main (class-specific files such as car_train.txt skipped)."""
    src = Path(src)
    main = src / "ImageSets" / "Main"
    if not main.is_dir():
        raise DataError("not a VOC folder: ImageSets/Main is missing", src)
    split_files = sorted(p for p in main.glob("*.txt") if splits is None or p.stem in splits)
    split_ids = {}
    for p in split_files:
        lines = [ln.split() for ln in p.read_text().splitlines() if ln.strip()]
        if lines and all(len(ln) == 1 for ln in lines):
            split_ids[p.stem] = [ln[0] for ln in lines]
    if not split_ids:
        raise DataError("no split lists (one image id a line) in ImageSets/Main", main)

    parsed = {}  # id -> (image path, w, h, objects[(name, difficult, x1, y1, x2, y2, where)])
    all_ids = sorted({i for ids in split_ids.values() for i in ids})
    for img_id in tqdm(all_ids, desc="read VOC", unit="xml", leave=False, disable=len(all_ids) < 500):
        parsed[img_id] = _read_voc_xml(src, img_id)

    writers = []
    for split, ids in split_ids.items():
        w = _start(out, split, names, copy)
        if w.names is None:
            found = sorted({o[0] for i in all_ids for o in parsed[i][3]})
            if not found:
                raise DataError("no objects to take class names from; pass --names", src)
            w.set_names(found)
        for img_id in ids:
            img, iw, ih, objs = parsed[img_id]
            xml = src / "Annotations" / f"{img_id}.xml"
            keep = [(w.class_index(o[0], o[6], xml), o) for o in objs]
            keep = [(c, o) for c, o in keep if c is not None]
            rel = w.boxes([o[2:6] for _, o in keep], iw, ih, [o[6] for _, o in keep], xml)
            d = np.array([o[1] for _, o in keep], bool)
            cls = np.array([c for c, _ in keep], np.float64)
            w.add(img, img.name, cls[~d], rel[~d], cls[d], rel[d])
        w.write(with_difficult=True)
        writers.append(w)
    return writers


def _read_voc_xml(src: Path, img_id: str):
    xml = src / "Annotations" / f"{img_id}.xml"
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise DataError("annotation file not found (listed in ImageSets/Main)", xml) from None
    except ET.ParseError as e:
        raise DataError(f"invalid XML: {e}", xml, e.position[0]) from None
    fname = root.findtext("filename")
    img = src / "JPEGImages" / (fname.strip() if fname and fname.strip() else f"{img_id}.jpg")
    if not img.exists():
        img = src / "JPEGImages" / f"{img_id}.jpg"
    if not img.exists():
        raise DataError(f"image {img.name} not found in JPEGImages", xml)
    size = root.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        iw, ih = _voc_float(size, "width", "size", xml), _voc_float(size, "height", "size", xml)
        if iw < 1 or ih < 1 or iw != int(iw) or ih != int(ih):
            raise DataError(f"size: width={iw:g} height={ih:g} must be positive integers", xml)
        iw, ih = int(iw), int(ih)
    else:  # some VOC-style exports omit <size>
        iw, ih = image_size(img)
    objs = []
    for k, obj in enumerate(root.findall("object")):
        where = f"object {k}"
        name = _voc_text(obj, "name", where, xml)
        where = f"object {k} ({name})"
        dif = obj.findtext("difficult")
        try:
            dif = bool(int(dif.strip())) if dif is not None and dif.strip() else False
        except ValueError:
            raise DataError(f"{where}: <difficult> {dif!r} is not 0 or 1", xml) from None
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{where}: missing <bndbox>", xml)
        x1, y1, x2, y2 = (_voc_float(bb, t, where, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise DataError(f"{where}: xmax < xmin or ymax < ymin ({x1:g},{y1:g},{x2:g},{y2:g})", xml)
        objs.append((name, dif, x1 - 1, y1 - 1, x2, y2, where))
    return img, iw, ih, objs


# ---------------------------------------------------------------- COCO

def _coco_images_dir(json_path: Path, images) -> Path:
    if images is not None:
        d = Path(images)
        if not d.is_dir():
            raise DataError("image folder not found", d)
        return d
    stem = json_path.stem.split("_", 1)[1] if "_" in json_path.stem else json_path.stem
    for d in (json_path.parent.parent / stem, json_path.parent.parent / "images" / stem,
              json_path.parent / stem, json_path.parent / "images", json_path.parent):
        if d.is_dir() and d != json_path.parent:
            return d
    raise DataError(f"cannot find the image folder (tried ../{stem}, ../images/{stem}); pass --images", json_path)


def convert_coco(src, out, names=None, images=None, split=None, copy=False) -> _Writer:
    """COCO instances JSON -> Darknet (categories -> contiguous indices, crowd -> sidecar)."""
    src = Path(src)
    doc = _load_json(src)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError("not a COCO instances file: needs lists 'images', 'annotations', 'categories'", src)
    img_dir = _coco_images_dir(src, images)
    split = split or (src.stem.split("_", 1)[1] if src.stem.startswith("instances_") else src.stem)

    cats = {}
    for k, c in enumerate(doc["categories"]):
        where = f"categories[{k}]"
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DataError(f"{where}: needs an integer 'id' and a string 'name'", src)
        if c["id"] in cats:
            raise DataError(f"{where}: category id {c['id']} repeats", src)
        cats[c["id"]] = c["name"]
    w = _start(out, split, names, copy)
    if w.names is None:
        w.set_names([cats[i] for i in sorted(cats)])

    imgs = {}
    for k, im in enumerate(doc["images"]):
        where = f"images[{k}]"
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise DataError(f"{where}: needs an integer 'id' and a string 'file_name'", src)
        if im["id"] in imgs:
            raise DataError(f"{where}: image id {im['id']} repeats", src)
        iw, ih = (_num(im.get(t), t, where, src) for t in ("width", "height"))
        if iw < 1 or ih < 1:
            raise DataError(f"{where}: width={iw:g} height={ih:g} must be positive", src)
        imgs[im["id"]] = (k, im["file_name"], int(iw), int(ih), [], [])

    for k, a in enumerate(tqdm(doc["annotations"], desc="read COCO", unit="ann", leave=False,
                               disable=len(doc["annotations"]) < 20000)):
        where = f"annotations[{k}]" + (f" (id {a.get('id')})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict):
            raise DataError(f"{where}: not an object", src)
        if a.get("image_id") not in imgs:
            raise DataError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'", src)
        if a.get("category_id") not in cats:
            raise DataError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'", src)
        bb = a.get("bbox")
        if not isinstance(bb, list) or len(bb) != 4:
            raise DataError(f"{where}: bbox must be [x, y, w, h]", src)
        x, y, bw, bh = (_num(v, "bbox", where, src) for v in bb)
        if bw <= 0 or bh <= 0:
            raise DataError(f"{where}: bbox width {bw:g} and height {bh:g} must be positive", src)
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}", src)
        c = w.class_index(cats[a["category_id"]], where, src)
        if c is not None:
            imgs[a["image_id"]][5 if crowd else 4].append((c, x, y, x + bw, y + bh, where))

    for _, (k, fname, iw, ih, objs, crowd) in sorted(imgs.items(), key=lambda kv: kv[1][0]):
        img = img_dir / fname
        if not img.is_file():
            raise DataError(f"images[{k}]: file {fname} not found in {img_dir}", src)
        rel = w.boxes([o[1:5] for o in objs], iw, ih, [o[5] for o in objs], src)
        drel = w.boxes([o[1:5] for o in crowd], iw, ih, [o[5] for o in crowd], src)
        w.add(img, fname, [o[0] for o in objs], rel, [o[0] for o in crowd], drel)
    w.write(with_difficult=True)
    return w


# ---------------------------------------------------------------- BDD100K

def parse_where(items) -> dict[str, set[str]]:
    """``["timeofday=night", "weather=rainy", "weather=snowy"]`` -> {key: values};
    one key's values are alternatives (OR), different keys must all hold (AND)."""
    out: dict[str, set[str]] = {}
    for s in items or ():
        if "=" not in s or not s.split("=", 1)[0].strip() or not s.split("=", 1)[1].strip():
            raise DataError(f"--where {s!r}: expected KEY=VALUE, e.g. timeofday=daytime")
        k, v = (t.strip() for t in s.split("=", 1))
        out.setdefault(k, set()).add(v)
    return out


def convert_bdd100k(src, out, images, names=None, where=(), split=None, copy=False) -> _Writer:
    """BDD100K detection labels JSON (a list of frames) -> Darknet, keeping the frames whose
    ``attributes`` match every ``--where`` key.  Labels without ``box2d`` (lanes, drivable
    area) are not objects and are skipped; image sizes come from the image files."""
    src = Path(src)
    doc = _load_json(src)
    if not isinstance(doc, list):
        raise DataError("a BDD100K labels file is a JSON list of frames", src)
    img_dir = Path(images)
    if not img_dir.is_dir():
        raise DataError("image folder not found", img_dir)
    cond = parse_where(where)
    split = split or src.stem
    w = _start(out, split, names, copy)
    derive = w.names is None

    frames, cats = [], set()
    for k, fr in enumerate(doc):
        wf = f"[{k}]"
        if not isinstance(fr, dict) or not isinstance(fr.get("name"), str):
            raise DataError(f"{wf}: a frame needs a string 'name'", src)
        wf = f"[{k}] ({fr['name']})"
        attrs = fr.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise DataError(f"{wf}: 'attributes' must be an object", src)
        if any(attrs.get(key) not in vals for key, vals in cond.items()):
            continue
        labels = fr.get("labels") or []
        if not isinstance(labels, list):
            raise DataError(f"{wf}: 'labels' must be a list", src)
        objs = []
        for j, lab in enumerate(labels):
            wl = f"{wf}.labels[{j}]"
            if not isinstance(lab, dict) or not isinstance(lab.get("category"), str):
                raise DataError(f"{wl}: needs a string 'category'", src)
            b = lab.get("box2d")
            if b is None:
                continue
            if not isinstance(b, dict):
                raise DataError(f"{wl}: box2d must be an object with x1, y1, x2, y2", src)
            x1, y1, x2, y2 = (_num(b.get(t), f"box2d.{t}", wl, src) for t in ("x1", "y1", "x2", "y2"))
            if x2 <= x1 or y2 <= y1:
                raise DataError(f"{wl}: box2d has x2 <= x1 or y2 <= y1 ({x1:g},{y1:g},{x2:g},{y2:g})", src)
            objs.append((lab["category"], x1, y1, x2, y2, wl))
            cats.add(lab["category"])
        frames.append((k, fr["name"], objs))
    if not frames:
        raise DataError("no frame matches " + (" and ".join(f"{k} in {sorted(v)}" for k, v in cond.items()) or "(empty file)"), src)
    if derive:
        if not cats:
            raise DataError("the selected frames have no boxes to take class names from; pass --names", src)
        w.set_names(sorted(cats))

    for k, name, objs in tqdm(frames, desc="BDD100K", unit="img", leave=False, disable=len(frames) < 500):
        img = img_dir / name
        try:
            iw, ih = image_size(img)
        except DataError as e:
            raise DataError(f"[{k}]: {e.message}: {img}", src) from None
        keep = [(w.class_index(o[0], o[5], src), o) for o in objs]
        keep = [(c, o) for c, o in keep if c is not None]
        rel = w.boxes([o[1:5] for _, o in keep], iw, ih, [o[5] for _, o in keep], src)
        w.add(img, name, [c for c, _ in keep], rel, [], np.zeros((0, 4)))
    w.write(with_difficult=False)
    return w


# ---------------------------------------------------------------- back to COCO

def to_coco(data, key: str = "valid", out=None, category_ids=None) -> dict:
    """A Darknet dataset (a .data path or DataConfig; the list under ``key``) as a COCO
    instances dict, written to ``out`` when given.

    Image ``id`` = position in the list + 1 (so detections can be matched by order),
    ``file_name`` = the path as resolved (relative to the .data folder when under it);
    sizes are read from the image headers.  Category ``id`` = class index + 1 unless
    ``category_ids`` (one per class) is given.  Boxes: [x, y, w, h] in pixels, rounded to
    1e-6.  Boxes of a ``difficult=`` list are exported with ``iscrowd=1``."""
    cfg = data if isinstance(data, DataConfig) else read_data_file(data)
    names = cfg.class_names()
    ids = list(range(1, len(names) + 1)) if category_ids is None else list(category_ids)
    if len(ids) != len(names):
        raise DataError(f"category_ids has {len(ids)} ids for {len(names)} classes", cfg.path)
    images = cfg.images(key)
    difficult = None
    if cfg.get("difficult") is not None and key == "valid":
        difficult = read_list(cfg.resolve("difficult"), anchors=(cfg.root,))
        if len(difficult) != len(images):
            raise DataError(f"difficult= list has {len(difficult)} entries, {key}= has {len(images)}",
                            cfg.path, cfg._lines.get("difficult"))
    root = Path(os.path.abspath(cfg.root))
    doc = {"info": {"description": f"darknet-kd export of {cfg.path}:{key}"}, "images": [], "annotations": [],
           "categories": [{"id": int(i), "name": n} for i, n in zip(ids, names)]}
    for k, img in enumerate(tqdm(images, desc="to COCO", unit="img", leave=False, disable=len(images) < 500)):
        iw, ih = image_size(img)
        try:
            fname = Path(os.path.abspath(img)).relative_to(root).as_posix()
        except ValueError:
            fname = str(img)
        doc["images"].append({"id": k + 1, "file_name": fname, "width": iw, "height": ih})
        sets = [(read_labels(label_path(img), len(names), dtype=np.float64), 0)]
        if difficult is not None:
            sets.append((read_labels(label_path(difficult[k]), len(names), dtype=np.float64), 1))
        for lab, crowd in sets:
            for c, cx, cy, bw, bh in lab:
                x1, y1 = round((cx - bw / 2) * iw, 6), round((cy - bh / 2) * ih, 6)
                x2, y2 = round((cx + bw / 2) * iw, 6), round((cy + bh / 2) * ih, 6)
                box = [x1, y1, round(x2 - x1, 6), round(y2 - y1, 6)]
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": k + 1,
                                           "category_id": int(ids[int(c)]), "bbox": box,
                                           "area": round(box[2] * box[3], 6), "iscrowd": crowd})
    if out is not None:
        atomic_write(out, json.dumps(doc))
    return doc


# ---------------------------------------------------------------- CLI

def add_parser(sub):
    p = sub.add_parser("convert", help="convert VOC / COCO / BDD100K annotations to a Darknet dataset (and back to COCO)")
    fs = p.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def common(q):
        q.add_argument("out", help="output folder")
        q.add_argument("--names", help="class names file: selects the classes and their order")
        q.add_argument("--copy", action="store_true", help="copy images instead of linking them")

    q = fs.add_parser("voc", help="PASCAL VOC folder (Annotations, ImageSets/Main, JPEGImages)")
    q.add_argument("src", help="e.g. VOCdevkit/VOC2007")
    common(q)
    q.add_argument("--split", action="append", help="only these ImageSets/Main splits (repeatable)")
    q.set_defaults(func=lambda a: _report(convert_voc(a.src, a.out, a.names, a.copy, a.split)))

    q = fs.add_parser("coco", help="COCO instances JSON")
    q.add_argument("src", help="e.g. annotations/instances_val2017.json")
    common(q)
    q.add_argument("--images", help="image folder (default: guessed from the JSON path)")
    q.add_argument("--split", help="list name (default: from the JSON file name)")
    q.set_defaults(func=lambda a: _report([convert_coco(a.src, a.out, a.names, a.images, a.split, a.copy)]))

    q = fs.add_parser("bdd100k", help="BDD100K detection labels JSON")
    q.add_argument("src", help="e.g. labels/bdd100k_labels_images_train.json")
    common(q)
    q.add_argument("--images", required=True, help="image folder, e.g. images/100k/train")
    q.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep frames whose attribute KEY is VALUE (repeatable: same key = or, keys = and)")
    q.add_argument("--split", help="list name (default: the JSON file name)")
    q.set_defaults(func=lambda a: _report([convert_bdd100k(a.src, a.out, a.images, a.names, a.where, a.split,
                                                           a.copy)]))

    q = fs.add_parser("to-coco", help="a Darknet dataset list back to COCO instances JSON")
    q.add_argument("data", help="the .data file")
    q.add_argument("out", help="output JSON")
    q.add_argument("--list", default="valid", help=".data key of the list (default valid)")
    q.set_defaults(func=_to_coco_cli)


def _report(writers):
    for w in writers:
        print(w.summary())
    return 0


def _to_coco_cli(a):
    doc = to_coco(a.data, a.list, a.out)
    print(f"{a.out}: {len(doc['images'])} images, {len(doc['annotations'])} annotations", file=sys.stdout)
    return 0
