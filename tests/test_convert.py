"""Converters: small VOC / COCO / BDD100K inputs written here -> Darknet -> COCO JSON, boxes
compared exactly; pycocotools loads (and evaluates) the export; bad annotations -> DataError."""
import contextlib
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknet_kd.cli import main
from darknet_kd.data.check import check_dataset
from darknet_kd.data.convert import convert_bdd100k, convert_coco, convert_voc, parse_where, to_coco
from darknet_kd.data.darknet import label_path, read_data_file, read_labels, read_names, write_names
from darknet_kd.errors import DataError


def _img(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


# ---------------------------------------------------------------- VOC

VOC_OBJS = {  # id -> (w, h, [(name, difficult, xmin, ymin, xmax, ymax)])
    "000001": (353, 500, [("dog", 0, 48, 240, 195, 371), ("person", 0, 8, 12, 352, 498)]),
    "000002": (335, 500, [("train", 0, 139, 200, 207, 301), ("person", 1, 10, 20, 30.5, 60)]),
    "000003": (500, 375, []),
}


def _voc(root: Path, objs=VOC_OBJS, splits={"trainval": ["000001", "000003"], "test": ["000002"]}):
    for i, (w, h, obs) in objs.items():
        _img(root / "JPEGImages" / f"{i}.jpg", w, h)
        xml = [f"<annotation><filename>{i}.jpg</filename><size><width>{w}</width><height>{h}</height>"
               "<depth>3</depth></size>"]
        for n, d, x1, y1, x2, y2 in obs:
            xml.append(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin>"
                       f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{i}.xml").write_text("".join(xml) + "</annotation>")
    main_dir = root / "ImageSets" / "Main"
    main_dir.mkdir(parents=True, exist_ok=True)
    for s, ids in splits.items():
        (main_dir / f"{s}.txt").write_text("".join(i + "\n" for i in ids))
    (main_dir / "dog_trainval.txt").write_text("000001  1\n000003 -1\n")  # class-specific: skipped


def _coco_boxes(doc):
    """{(file stem, category name, iscrowd): sorted boxes}"""
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: Path(im["file_name"]).stem for im in doc["images"]}
    out = {}
    for a in doc["annotations"]:
        out.setdefault((files[a["image_id"]], cats[a["category_id"]], a["iscrowd"]), []).append(a["bbox"])
    return {k: sorted(v) for k, v in out.items()}


def test_voc_round_trip(tmp_path):
    _voc(tmp_path / "VOC")
    out = tmp_path / "out"
    assert main(["convert", "voc", str(tmp_path / "VOC"), str(out)]) == 0
    assert read_names(out / "classes.names") == ["dog", "person", "train"]
    assert sorted(p.name for p in out.glob("*.data")) == ["test.data", "trainval.data"]
    # training labels exclude the difficult person; the difficult sidecar holds it
    lab = read_labels(out / "labels" / "000002.txt", 3, dtype=np.float64)
    assert lab[:, 0].tolist() == [2]
    dif = read_labels(out / "difficult" / "000002.txt", 3, dtype=np.float64)
    assert dif[:, 0].tolist() == [1]
    assert (out / "labels" / "000003.txt").read_text() == ""
    errors, stats = check_dataset(out / "trainval.data", out=io.StringIO())
    assert errors == [] and stats["train"].images == 2 and stats["train"].empty == 1

    got = {}
    for split in ("trainval", "test"):
        doc = to_coco(out / f"{split}.data", "valid", tmp_path / f"{split}.json")
        got.update(_coco_boxes(doc))
    want = {}
    for i, (_, _, obs) in VOC_OBJS.items():
        for n, d, x1, y1, x2, y2 in obs:  # VOC 1-based inclusive -> [x1-1, x2]
            want.setdefault((i, n, d), []).append([x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1])
    assert got == {k: sorted(v) for k, v in want.items()}


def test_voc_names_selects_classes(tmp_path):
    _voc(tmp_path / "VOC")
    write_names(tmp_path / "sel.names", ["person", "dog"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["convert", "voc", str(tmp_path / "VOC"), str(tmp_path / "o"), "--names",
                     str(tmp_path / "sel.names"), "--split", "trainval"]) == 0
    assert "dropped (class not in names): train 1" not in buf.getvalue()  # train image is in 'test'
    lab = read_labels(tmp_path / "o" / "labels" / "000001.txt", 2)
    assert sorted(lab[:, 0].tolist()) == [0, 1]  # person=0, dog=1 as in sel.names
    assert not (tmp_path / "o" / "test.txt").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.replace("<xmax>195</xmax>", "<xmax>x</xmax>"), "object 0 (dog): <xmax> 'x' is not a number"),
    (lambda s: s.replace("<xmax>195</xmax>", "<xmax>20</xmax>"), "object 0 (dog): xmax < xmin"),
    (lambda s: s.replace("</annotation>", ""), "invalid XML"),
    (lambda s: s.replace("<name>person</name>", ""), "object 1: missing <name>"),
    (lambda s: s.replace("<ymin>240</ymin><xmax>195</xmax><ymax>371</ymax>", "<ymin>600</ymin><xmax>195</xmax>"
                         "<ymax>700</ymax>"), "object 0 (dog): box"),
])
def test_voc_bad_annotation(tmp_path, mutate, message):
    _voc(tmp_path / "VOC")
    xml = tmp_path / "VOC" / "Annotations" / "000001.xml"
    xml.write_text(mutate(xml.read_text()))
    with pytest.raises(DataError, match=re.escape(message)) as e:
        convert_voc(tmp_path / "VOC", tmp_path / "out")
    assert e.value.path == str(xml)


# ---------------------------------------------------------------- COCO

def _coco(tmp_path):
    root = tmp_path / "coco"
    _img(root / "val2017" / "000000000139.jpg", 640, 426)
    _img(root / "val2017" / "000000000285.jpg", 586, 640)
    _img(root / "val2017" / "000000000632.png", 300, 200)
    doc = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 640, "height": 426},
                   {"id": 285, "file_name": "000000000285.jpg", "width": 586, "height": 640},
                   {"id": 632, "file_name": "000000000632.png", "width": 300, "height": 200}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "bbox": [412.8, 157.61, 53.05, 138.01], "iscrowd": 0},
            {"id": 2, "image_id": 139, "category_id": 90, "bbox": [384.43, 172.21, 15.12, 35.74], "iscrowd": 0},
            {"id": 3, "image_id": 285, "category_id": 3, "bbox": [12.0, 0.0, 574.0, 640.0], "iscrowd": 0},
            {"id": 4, "image_id": 285, "category_id": 1, "bbox": [100.5, 200.25, 50.0, 60.0], "iscrowd": 1},
        ]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    return root, doc


def test_coco_round_trip_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, doc = _coco(tmp_path)
    out = tmp_path / "out"
    assert main(["convert", "coco", str(root / "annotations" / "instances_val2017.json"), str(out)]) == 0
    assert read_names(out / "classes.names") == ["person", "car", "toothbrush"]  # ids 1, 3, 90 -> 0, 1, 2
    assert (out / "JPEGImages" / "000000000632.png").is_symlink()
    cfg = read_data_file(out / "val2017.data")
    assert cfg.classes == 3 and len(cfg.images("valid")) == 3
    lab = read_labels(label_path(cfg.images("valid")[0]), 3)
    assert sorted(lab[:, 0].tolist()) == [0, 2]

    exported = tmp_path / "gt.json"
    assert main(["convert", "to-coco", str(out / "val2017.data"), str(exported)]) == 0
    back = json.loads(exported.read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: Path(im["file_name"]).stem for im in doc["images"]}
    want = {}
    for a in doc["annotations"]:
        want.setdefault((files[a["image_id"]], names[a["category_id"]], a["iscrowd"]), []).append(a["bbox"])
    assert _coco_boxes(back) == {k: sorted(v) for k, v in want.items()}
    assert [(im["width"], im["height"]) for im in back["images"]] == [(640, 426), (586, 640), (300, 200)]

    gt = COCO(str(exported))
    assert len(gt.getImgIds()) == 3 and len(gt.getAnnIds()) == 4
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in back["annotations"] if not a["iscrowd"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the ground truth detects itself perfectly; crowd ignored


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][2].update(bbox=[1, 2, 0, 5]), r"annotations\[2\] \(id 3\): bbox width 0"),
    (lambda d: d["annotations"][1].update(category_id=7), r"annotations\[1\] \(id 2\): category_id 7"),
    (lambda d: d["annotations"][0].update(image_id=5), r"annotations\[0\] \(id 1\): image_id 5"),
    (lambda d: d["annotations"][0].update(bbox=[1, "a", 3, 4]), r"annotations\[0\] \(id 1\): bbox must be a finite"),
    (lambda d: d["annotations"][3].update(iscrowd=2), r"annotations\[3\] \(id 4\): iscrowd"),
    (lambda d: d["images"][1].update(id=139), r"images\[1\]: image id 139 repeats"),
    (lambda d: d["images"][2].update(file_name="missing.jpg"), r"images\[2\]: file missing.jpg not found"),
    (lambda d: d.pop("categories"), "not a COCO instances file"),
])
def test_coco_bad_annotation(tmp_path, mutate, message):
    root, doc = _coco(tmp_path)
    mutate(doc)
    src = root / "annotations" / "instances_val2017.json"
    src.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as e:
        convert_coco(src, tmp_path / "out")
    assert e.value.path == str(src)


def test_coco_invalid_json_names_line(tmp_path):
    root, _ = _coco(tmp_path)
    src = root / "annotations" / "instances_val2017.json"
    src.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DataError) as e:
        convert_coco(src, tmp_path / "out")
    assert e.value.line == 2


# ---------------------------------------------------------------- BDD100K

def _bdd(tmp_path):
    img = tmp_path / "bdd" / "images" / "100k" / "val"
    frames = []
    specs = [("b1c66a42-6f7d68ca.jpg", "daytime", "clear", [("car", 45.2, 254.7, 357.8, 487.9), ("traffic sign", 1000, 100.5, 1010.25, 120)]),
             ("b1c81faa-3df17267.jpg", "night", "rainy", [("person", 500, 300, 520, 360.75)]),
             ("b1ca2e5d-84cf9134.jpg", "daytime", "rainy", [("bus", 0, 0, 1280, 720), ("truck", 600, 200, 700, 300)]),
             ("b1cebfb7-284f5117.jpg", "dawn/dusk", "clear", [])]
    for name, tod, weather, objs in specs:
        _img(img / name, 1280, 720)
        labels = [{"category": c, "id": k, "attributes": {"occluded": False}, "box2d": {"x1": a, "y1": b, "x2": x, "y2": y}}
                  for k, (c, a, b, x, y) in enumerate(objs)]
        labels.append({"category": "lane", "poly2d": [{"vertices": [[0, 0], [5, 5]]}]})
        frames.append({"name": name, "attributes": {"weather": weather, "scene": "city street", "timeofday": tod},
                       "timestamp": 10000, "labels": labels})
    src = tmp_path / "bdd" / "labels" / "bdd100k_labels_images_val.json"
    src.parent.mkdir(parents=True)
    src.write_text(json.dumps(frames))
    return src, img, frames


def test_bdd100k_where_filters_and_round_trip(tmp_path):
    src, img, frames = _bdd(tmp_path)
    day = tmp_path / "day"
    assert main(["convert", "bdd100k", str(src), str(day), "--images", str(img), "--where", "timeofday=daytime",
                 "--split", "day"]) == 0
    cfg = read_data_file(day / "day.data")
    assert [p.name for p in cfg.images("train")] == [frames[0]["name"], frames[2]["name"]]
    assert read_names(day / "classes.names") == ["bus", "car", "traffic sign", "truck"]

    back = to_coco(cfg, "valid")
    want = {}
    for fr in (frames[0], frames[2]):
        for lab in fr["labels"]:
            if "box2d" in lab:
                b = lab["box2d"]
                want.setdefault((Path(fr["name"]).stem, lab["category"], 0), []).append(
                    [b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]])
    assert _coco_boxes(back) == {k: sorted(v) for k, v in want.items()}

    # same key = OR, different keys = AND; the night split reuses day's classes.names (person is unknown)
    mixed, where = tmp_path / "mixed", ["timeofday=night", "timeofday=dawn/dusk", "weather=clear"]
    with pytest.raises(DataError, match="no boxes to take class names from"):
        convert_bdd100k(src, mixed, img, where=where)
    w = convert_bdd100k(src, mixed, img, names=day / "classes.names", where=where)
    assert [it[1] for it in w.items] == [frames[3]["name"]]
    with pytest.raises(DataError, match=r"\[1\] \(b1c81faa-3df17267.jpg\).labels\[0\]: class 'person' is not in"):
        convert_bdd100k(src, day, img, where=["timeofday=night"])
    with pytest.raises(DataError, match="no frame matches"):
        convert_bdd100k(src, tmp_path / "x", img, where=["weather=foggy"])
    with pytest.raises(DataError, match="expected KEY=VALUE"):
        parse_where(["timeofday"])


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f[1]["labels"][0]["box2d"].update(x2=400), r"\[1\] \(b1c81faa-3df17267.jpg\).labels\[0\]: box2d has x2 <= x1"),
    (lambda f: f[2]["labels"][1]["box2d"].pop("y1"), r"\[2\] \(b1ca2e5d-84cf9134.jpg\).labels\[1\]: box2d.y1 must be"),
    (lambda f: f[0].pop("name"), r"\[0\]: a frame needs a string 'name'"),
    (lambda f: f[0]["labels"][0].pop("category"), r"\[0\] \(b1c66a42-6f7d68ca.jpg\).labels\[0\]: needs a string"),
    (lambda f: f[3].update(name="gone.jpg"), r"\[3\]: image not found"),
])
def test_bdd100k_bad_annotation(tmp_path, mutate, message):
    src, img, frames = _bdd(tmp_path)
    mutate(frames)
    src.write_text(json.dumps(frames))
    with pytest.raises(DataError, match=message) as e:
        convert_bdd100k(src, tmp_path / "out", img)
    assert e.value.path == str(src)


def test_cli_reports_conversion_errors(tmp_path, capsys):
    src, img, frames = _bdd(tmp_path)
    frames[0]["labels"][0]["box2d"]["x1"] = "left"
    src.write_text(json.dumps(frames))
    assert main(["convert", "bdd100k", str(src), str(tmp_path / "o"), "--images", str(img)]) == 2
    err = capsys.readouterr().err
    assert "labels[0]: box2d.x1 must be a finite number" in err and "Traceback" not in err
