"""Darknet dataset files: .data, .names, lists, the image -> label rule, strict labels,
`darknet-kd check`; a seeded fuzz test (nothing but DarknetKDError escapes)."""
import io
import os
import random

import cv2
import numpy as np
import pytest

from darknet_kd.cli import main
from darknet_kd.data.check import check_dataset
from darknet_kd.data.darknet import (label_path, read_data_file, read_labels, read_list, read_names,
                                     write_data_file, write_labels, write_list, write_names)
from darknet_kd.errors import DarknetKDError, DataError


# ---------------------------------------------------------------- label path rule (utils.c)

@pytest.mark.parametrize("image, label", [
    ("/d/VOC2007/JPEGImages/000001.jpg", "/d/VOC2007/labels/000001.txt"),
    ("/coco/images/train2017/0001.jpg", "/coco/labels/train2017/0001.txt"),
    ("/coco/images/val2014/x.JPEG", "/coco/labels/val2014/x.txt"),
    ("/data/images/x.png", "/data/images/x.txt"),  # a bare /images/ is NOT replaced
    ("/a/JPEGImages/b/JPEGImages/c.bmp", "/a/labels/b/JPEGImages/c.txt"),  # first occurrence only
    ("C:\\voc\\JPEGImages\\1.PNG", "C:\\voc\\labels\\1.txt"),
    ("/x/img.tiff", "/x/img.txt"),
    ("/x/img.jpg.png", "/x/img.jpg.txt"),  # only the trailing extension
])
def test_label_path_rule(image, label):
    assert str(label_path(image)) == label


@pytest.mark.parametrize("image", ["/x/a.Jpg", "/x/a.gif", "/x/a"])
def test_label_path_unknown_extension(image):
    with pytest.raises(DataError, match="cannot infer the label file name"):
        label_path(image)


# ---------------------------------------------------------------- labels

def test_labels_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(0, 80, (50, 1)), rng.uniform(0.3, 0.7, (50, 2)), rng.uniform(0.01, 0.5, (50, 2))], 1)
    write_labels(tmp_path / "a.txt", a.astype(np.float32))
    assert (read_labels(tmp_path / "a.txt", 80) == a.astype(np.float32)).all()
    write_labels(tmp_path / "b.txt", a)  # float64 keeps all digits
    assert (read_labels(tmp_path / "b.txt", 80, dtype=np.float64) == a).all()
    write_labels(tmp_path / "c.txt", np.array([[3, 0.5, 0.25, 0.125, 0.5]], np.float32))
    assert (tmp_path / "c.txt").read_text() == "3 0.500000 0.250000 0.125000 0.500000\n"  # Darknet's %d %f


def test_missing_label_file_is_no_boxes(tmp_path):
    assert read_labels(tmp_path / "none.txt", 3).shape == (0, 5)


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.1", "expected 5 fields 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.1 0.1 7", "expected 5 fields"),
    ("3 0.5 0.5 0.1 0.1", "class id 3 is outside 0..2"),
    ("-1 0.5 0.5 0.1 0.1", "class id -1 is outside"),
    ("1.0 0.5 0.5 0.1 0.1", "class id '1.0' is not an integer"),
    ("1 0.5 abc 0.1 0.1", "'abc' is not a number"),
    ("1 0.5 nan 0.1 0.1", "'nan' is not a number"),
    ("1 1.5 0.5 0.1 0.1", "cx = 1.5 is outside [0, 1]"),
    ("1 0.5 -0.2 0.1 0.1", "cy = -0.2 is outside"),
    ("1 0.98 0.5 0.1 0.1", "right edge = 1.03 is outside"),
    ("1 0.5 0.5 0 0.1", "box size w=0 h=0.1 must be positive"),
    ("1 0.5 0.5 0.1 -0.1", "must be positive"),
])
def test_label_errors_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "img.txt"
    p.write_text("0 0.5 0.5 0.2 0.2\n\n" + line + "\n")
    with pytest.raises(DataError) as e:
        read_labels(p, 3)
    assert e.value.path == str(p) and e.value.line == 3
    assert message in str(e.value) and str(e.value).startswith(f"{p}:3: ")


def test_label_tolerance_and_crlf(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbf1 0.9995 0.5 0.001 0.2\r\n")  # BOM, CRLF, edge 0.0005 over 1: within tolerance
    assert read_labels(p, 2).shape == (1, 5)
    p.write_bytes(b"1 0.5 0.5 0.1 0.1\n\xff\xfe")
    with pytest.raises(DataError, match="not UTF-8") as e:
        read_labels(p, 2)
    assert e.value.line == 2


def test_write_labels_rejects_bad_arrays(tmp_path):
    for bad in (np.zeros((2, 4)), np.array([[0.5, 0.5, 0.5, 0.1, 0.1]]), np.array([[0, np.nan, 0.5, 0.1, 0.1]])):
        with pytest.raises(DataError):
            write_labels(tmp_path / "x.txt", bad)
    assert not (tmp_path / "x.txt").exists()


# ---------------------------------------------------------------- .data / .names / lists

def test_data_file_round_trip_and_resolution(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    (ds / "JPEGImages").mkdir(parents=True)
    write_names(ds / "x.names", ["car", "person"])
    imgs = [ds / "JPEGImages" / "a.jpg", ds / "JPEGImages" / "b.png"]
    write_list(ds / "lists" / "train.txt", imgs, root=ds)  # entries relative to the .data folder (Darknet's cwd)
    assert (ds / "lists" / "train.txt").read_text() == "JPEGImages/a.jpg\nJPEGImages/b.png\n"
    write_data_file(ds / "x.data", {"classes": 2, "train": ds / "lists" / "train.txt", "names": "x.names",
                                    "backup": "backup/", "eval": "coco", "difficult": "d.txt"})
    text = (ds / "x.data").read_text()
    assert text == "classes=2\ntrain=lists/train.txt\nnames=x.names\nbackup=backup/\neval=coco\ndifficult=d.txt\n"
    monkeypatch.chdir(tmp_path)  # not the dataset folder: relative paths fall back to the .data folder
    cfg = read_data_file("ds/x.data")
    assert cfg.classes == 2 and cfg.train == "lists/train.txt" and list(cfg.extra) == ["eval", "difficult"]
    assert [os.path.abspath(p) for p in cfg.images("train")] == [str(p) for p in imgs]
    assert cfg.class_names() == ["car", "person"]
    write_data_file(tmp_path / "copy.data", cfg)
    assert read_data_file(tmp_path / "copy.data").extra == cfg.extra
    # Darknet's rule first: a path that exists relative to the current directory wins
    (tmp_path / "x.names").write_text("a\nb\n")
    assert read_names(cfg.resolve("names")) == ["a", "b"]


@pytest.mark.parametrize("text, line, message", [
    ("classes=2\ntrain\n", 2, "expected 'key=value'"),
    ("classes=2\n=x\n", 2, "no key"),
    ("classes=2\nnames=\n", 2, "'names=' has no value"),
    ("classes=2\ntrain=a\n# c\ntrain=b\n", 4, "'train' repeats line 2"),
    ("classes=two\n", 1, "classes='two' is not an integer"),
    ("# x\nclasses=0\n", 2, "classes=0 must be positive"),
    ("train=a\n", None, "no 'classes=' entry"),
])
def test_data_file_errors(tmp_path, text, line, message):
    p = tmp_path / "a.data"
    p.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_data_file(p)
    assert e.value.path == str(p) and e.value.line == line


def test_names_errors(tmp_path):
    p = tmp_path / "a.names"
    p.write_text("car\n\nbus\n")
    with pytest.raises(DataError, match="empty class name") as e:
        read_names(p)
    assert e.value.line == 2
    p.write_text("car\nbus\ncar\n\n")
    with pytest.raises(DataError, match="'car' repeats line 1") as e:
        read_names(p)
    assert e.value.line == 3
    p.write_text("car\nbus\n\n\n")
    assert read_names(p) == ["car", "bus"]
    cfg_p = tmp_path / "a.data"
    cfg_p.write_text("classes=3\nnames=a.names\n")
    with pytest.raises(DataError, match="classes=3 but the names file a.names has 2 names") as e:
        read_data_file(cfg_p).class_names()
    assert e.value.line == 1
    with pytest.raises(DataError, match="list file not found"):
        read_list(tmp_path / "nope.txt")


# ---------------------------------------------------------------- check

def _dataset(root, n=4):
    write_names(root / "d.names", ["a", "b"])
    imgs = []
    for i in range(n):
        p = root / "JPEGImages" / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.zeros((100, 200, 3), np.uint8))
        imgs.append(p)
        if i:
            write_labels(label_path(p), np.array([[i % 2, 0.5, 0.5, 0.05 * i, 0.1 * i]], np.float32))
    write_list(root / "train.txt", imgs)
    write_data_file(root / "d.data", {"classes": 2, "train": "train.txt", "valid": "train.txt", "names": "d.names"})
    return imgs


def test_check_ok_and_statistics(tmp_path, capsys):
    _dataset(tmp_path)
    assert main(["check", str(tmp_path / "d.data")]) == 0
    out = capsys.readouterr().out
    assert "images 4, boxes 3, images without boxes 1" in out
    assert "0 a" in out and "box size sqrt(w*h) in pixels" in out
    errors, stats = check_dataset(tmp_path / "d.data", decode=True, out=io.StringIO())
    assert errors == [] and dict(stats["train"].per_class) == {1: 2, 0: 1}
    # sqrt(w*h) in pixels of the 200x100 image: box i is 10i x 10i px
    assert sorted(stats["train"].sizes) == pytest.approx([10, 20, 30])


def test_check_reports_every_problem(tmp_path, capsys):
    imgs = _dataset(tmp_path)
    imgs[1].write_bytes(b"not an image")
    imgs[2].unlink()
    label_path(imgs[3]).write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n")
    assert main(["check", str(tmp_path / "d.data")]) == 1
    err = capsys.readouterr().err
    lst = tmp_path / "train.txt"
    assert f"{lst}:2: not a readable image" in err
    assert f"{lst}:3: image not found" in err
    assert f"{label_path(imgs[3])}:2: class id 5 is outside 0..1" in err
    assert "6 error(s)" in err  # each of the 3 problems, in train= and in valid=


# ---------------------------------------------------------------- fuzz

def _mutate(text: str, r: random.Random) -> str:
    ops = [
        lambda s, i: s[:i] + s[i + 1:],
        lambda s, i: s[:i] + r.choice("0123456789.-+eE =#;\n\t x/\\\x00é") + s[i:],
        lambda s, i: s[:i] + r.choice(["nan", "inf", "1e999", "-0", "99999999999999999999", "0x1"]) + s[i:],
        lambda s, i: s[:i] + s[i:][::-1],
        lambda s, i: s[:i] + s[i:i + 7] * 3 + s[i + 7:],
    ]
    for _ in range(r.randint(1, 4)):
        text = r.choice(ops)(text, r.randrange(len(text) + 1))
    return text


def test_fuzz_label_and_data_files(tmp_path):
    r = random.Random(1234)
    label = "0 0.5 0.5 0.2 0.3\n2 0.1 0.9 0.05 0.05\n"
    data = "classes=3\ntrain=train.txt\nvalid = train.txt\nnames=x.names\n# c\nbackup=backup/\n"
    write_names(tmp_path / "x.names", ["a", "b", "c"])
    (tmp_path / "train.txt").write_text("img.jpg\n")
    outcomes = {"ok": 0, "error": 0}
    for k in range(400):
        lp, dp = tmp_path / f"l{k}.txt", tmp_path / f"d{k}.data"
        lp.write_bytes(_mutate(label, r).encode("utf-8", "surrogatepass") + (b"\xff" if k % 50 == 0 else b""))
        dp.write_bytes(_mutate(data, r).encode())
        for fn in (lambda: read_labels(lp, 3), lambda: read_data_file(dp).class_names(),
                   lambda: read_data_file(dp).images("train")):
            try:
                fn()
                outcomes["ok"] += 1
            except DarknetKDError as e:
                assert e.path is not None and str(e).startswith(e.path)
                outcomes["error"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100  # the mutations reach both outcomes
