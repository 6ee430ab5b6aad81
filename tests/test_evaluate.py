"""`darknet-kd map` end to end on a model whose output is known exactly.

The network is a 16x16 maxpool and a 1x1 conv with zero weights: every cell of its 4x4
[yolo] grid predicts the same logits, so each cell yields one box exactly on the cell
(x = y = sigmoid(0) = .5, w = h = e^0 * 16/64) with one shared probability -- 16
detections per image that all tie. Darknet breaks those ties by get_network_boxes order
(cell by cell, row-major), so which labels exist decides the AP exactly.
"""
import json

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.cli import main
from darknet_kd.data.darknet import read_data_file
from darknet_kd.errors import DarknetKDError
from darknet_kd.eval.evaluate import darknet_nms, darknet_row_order, evaluate, markdown_path, nms_order
from darknet_kd.model import Darknet, load

CFG = """[net]
width=64
height=64
channels=3
{letter_box}
[maxpool]
size=16
stride=16

[convolutional]
size=1
stride=1
pad=0
filters={filters}
activation=linear

[yolo]
mask=0
anchors=16,16
classes={classes}
num=1
"""
OBJ, CLS = 2.0, 3.0            # logits: objectness .8808, class .9526 -> prob .8390


def make_model(tmp_path, classes=1, letter_box=False, cls_logits=None):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(CFG.format(filters=5 + classes, classes=classes, letter_box="letter_box=1" if letter_box else ""))
    model = Darknet.from_cfg(cfg)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.bias[4] = OBJ
        conv.bias[5:] = torch.tensor(cls_logits if cls_logits is not None else [CLS] * classes)
    model.save_weights(tmp_path / "net.weights")
    return cfg, tmp_path / "net.weights"


def make_data(tmp_path, cells_per_image, size=(64, 64), classes=1, names=None):
    """One image per entry; labels = class 0 boxes on the given (row, col) cells, in the
    image's own relative coordinates (a 64x32 image letterboxes into rows 1-2)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    lines = []
    w, h = size
    for i, cells in enumerate(cells_per_image):
        img = tmp_path / "images" / f"{i}.png"
        cv2.imwrite(str(img), np.full((h, w, 3), 90, np.uint8))
        rows = []
        for r, c in cells:
            if h == 64:
                rows.append(f"0 {(c + .5) / 4} {(r + .5) / 4} 0.25 0.25\n")
            else:  # 64x32 letterboxed: net rows 1, 2 cover the image
                rows.append(f"0 {(c + .5) / 4} {(r - 1 + .5) / 2} 0.25 0.5\n")
        (tmp_path / "images" / f"{i}.txt").write_text("".join(rows))
        lines.append(str(img))
    (tmp_path / "valid.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "obj.names").write_text("".join(f"{n}\n" for n in (names or [f"c{k}" for k in range(classes)])))
    (tmp_path / "obj.data").write_text(f"classes={classes}\nvalid=valid.txt\nnames=obj.names\n")
    return tmp_path / "obj.data"


ALL = [(r, c) for r in range(4) for c in range(4)]


def run_map(tmp_path, cells, letter_box=False, size=(64, 64), **kw):
    cfg, weights = make_model(tmp_path, letter_box=letter_box)
    data = make_data(tmp_path, cells, size)
    return evaluate(load(cfg, weights), read_data_file(data), workers=0, progress=False, **kw)


@pytest.mark.parametrize("points", [0, 11, 101])
def test_perfect_detections_give_map_1(tmp_path, points):
    r = run_map(tmp_path, [ALL, ALL], points=points, coco=True).darknet
    assert r.map == 1.0 and r.detections_count == 32 and r.unique_truth_count == 32
    assert (r.tp, r.fp, r.fn) == (32, 0, 0)
    assert r.avg_iou == pytest.approx(1.0, abs=1e-6)


def test_ties_rank_in_darknet_order(tmp_path):
    """16 tied detections; labels on the last 8 cells (rows 2-3) -> 8 FP rank first: AP .5.
    Labels on the first 8 cells -> the TPs rank first: AP 1."""
    late = [(r, c) for r in (2, 3) for c in range(4)]
    early = [(r, c) for r in (0, 1) for c in range(4)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_map(tmp_path / "a", [late]).darknet.ap[0] == pytest.approx(0.5, abs=1e-15)
    assert run_map(tmp_path / "b", [early]).darknet.ap[0] == 1.0


def test_letterbox_correction_maps_boxes_to_the_image(tmp_path):
    """A 64x32 image letterboxed into 64x64: cells in rows 0 and 3 lie on the padding
    (FP, ranked 4 first and 4 last), rows 1-2 are the image's 8 objects: AP = 8/12."""
    image_cells = [(r, c) for r in (1, 2) for c in range(4)]
    res = run_map(tmp_path, [image_cells], letter_box=True, size=(64, 32), coco=True)
    r = res.darknet
    assert r.ap[0] == pytest.approx(8 / 12, abs=1e-12)
    assert (r.tp, r.fp, r.fn) == (8, 8, 0)
    # without letter_box the same image is stretched: the 16 cells do not match the labels
    (tmp_path / "s").mkdir()
    stretched = run_map(tmp_path / "s", [image_cells], letter_box=False, size=(64, 32)).darknet
    assert stretched.tp == 0
    assert res.coco.stats[0] == pytest.approx(8 / 12 * 1.0, abs=0.02)  # pycocotools' 101-point AP


def test_nms_and_classes_follow_darknet(tmp_path):
    """Two classes with probs .84 and .73 on every cell: both survive NMS per class; the
    rows visit det by det, class by class, and class 1's labels are matched only by class 1."""
    cfg, weights = make_model(tmp_path, classes=2, cls_logits=[3.0, 1.5])
    data = make_data(tmp_path, [ALL], classes=2)
    r = evaluate(load(cfg, weights), read_data_file(data), workers=0, progress=False).darknet
    assert list(r.ap) == [1.0, 0.0] and r.detections_count == 32
    assert list(r.tp_thresh) == [16, 0] and list(r.fp_thresh) == [0, 16]


def test_nms_order_is_do_nms_sorts():
    probs = np.array([[0.2, 0.0], [0.9, 0.0], [0.2, 0.5], [0.3, 0.5], [0.0, 0.0]], np.float32)
    pos = np.array([4, 3, 2, 1, 0])
    # by prob[1] desc (rows 2, 3 tie -> prob[0] desc -> 3 first), then prob[0] desc, then position
    assert list(nms_order(probs, pos)) == [3, 2, 1, 0, 4]


def test_nms_ties_broken_as_darknets_chained_sorts():
    """Rows A, B overlap and tie at .8 for class 1. do_nms_sort's class-0 sort put B (.3)
    before A (.1), and its stable class-1 sort keeps that order: B survives class 1, not A
    (a plain lower-index-first tie break would keep A)."""
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    probs = torch.tensor([[0.1, 0.8], [0.3, 0.8], [0.0, 0.8]])
    keep = darknet_nms(boxes, probs, torch.zeros(3, dtype=torch.int64), 1, "default", 0.6)
    assert keep.tolist() == [[False, False], [True, True], [False, True]]
    # in another image the same rows do not interact
    keep2 = darknet_nms(boxes, probs, torch.tensor([0, 1, 1]), 2, "default", 0.6)
    assert keep2.tolist() == [[True, True], [True, True], [False, True]]


def test_row_order_is_get_network_boxes_order(tmp_path):
    cfg = tmp_path / "two.cfg"
    cfg.write_text(CFG.format(filters=12, classes=1, letter_box="").replace("mask=0", "mask=0,1")
                   .replace("anchors=16,16", "anchors=16,16,32,32").replace("num=1", "num=2"))
    pos = darknet_row_order(Darknet.from_cfg(cfg))
    # model rows: (anchor, row, col); Darknet: (cell, anchor)
    assert list(pos[:3]) == [0, 2, 4] and list(pos[16:19]) == [1, 3, 5]


def test_map_command_prints_darknet_report_and_writes_json(tmp_path, capsys):
    cfg, weights = make_model(tmp_path)
    data = make_data(tmp_path, [ALL[:8], ALL[8:]], names=["box"])
    out = tmp_path / "res" / "map.json"
    assert main(["map", str(data), str(cfg), str(weights), "--points", "11", "--coco", "--json", str(out),
                 "--workers", "0"]) == 0
    text = capsys.readouterr().out
    # image 0: TPs rank first (AP contribution 1), image 1: FPs first
    assert "class_id = 0, name = box, ap = " in text and "(TP = 16, FP = 16)" in text
    assert "used 11 Recall-points" in text and "mean average precision (mAP@0.50) = " in text
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in text
    d = json.loads(out.read_text())
    assert d["run"]["points"] == 11 and d["darknet"]["classes"][0]["truths"] == 16
    assert 0 < d["darknet"]["map"] < 1 and d["coco"]["stats"]["AP"] > 0
    assert "| 0 | box |" in markdown_path(out).read_text()


def test_map_command_errors_are_clear(tmp_path, capsys):
    cfg, weights = make_model(tmp_path)
    data = make_data(tmp_path, [ALL], classes=2)          # 2 classes in .data, 1 in the cfg
    assert main(["map", str(data), str(cfg), str(weights), "--workers", "0"]) == 2
    assert "classes=2 but the model's [yolo] layers have classes=1" in capsys.readouterr().err
    data = make_data(tmp_path, [ALL], classes=1)
    (tmp_path / "dif.txt").write_text("a.png\nb.png\n")
    data.write_text(data.read_text() + "difficult=dif.txt\n")
    assert main(["map", str(data), str(cfg), str(weights), "--workers", "0"]) == 2
    assert "the difficult list has 2 images but the valid list has 1" in capsys.readouterr().err
    assert main(["map", str(data), str(cfg), str(weights), "--points", "1"]) == 2


def test_diverged_weights_are_named_not_the_labels(tmp_path):
    """A model whose output is NaN (diverged training) is reported as such, naming the image,
    instead of as bad detections of the label file."""
    cfg, weights = make_model(tmp_path)
    data = make_data(tmp_path, [ALL])
    model = load(cfg, weights)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][0]
    with torch.no_grad():
        conv.bias[4] = float("nan")
    with pytest.raises(DarknetKDError, match=r"images/0\.png: the model's output .* NaN .* diverged"):
        evaluate(model, read_data_file(data), workers=0, progress=False)
