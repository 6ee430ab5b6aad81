"""detect and pseudo-label: the same detections as the map pipeline, Darknet's JSON, a
Darknet dataset of pseudo-labels that `check` accepts."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.cli import main
from darknet_kd.data.darknet import label_path, read_data_file, read_labels, read_list
from darknet_kd.detect import detect, image_paths, pseudo_label
from darknet_kd.errors import DataError
from darknet_kd.eval.evaluate import darknet_row_order, detect_batch
from darknet_kd.model import Darknet
from darknet_kd.model.weights import randomize

from synthetic import make_rect_dataset, tiny_cfg


@pytest.fixture
def setup(tmp_path):
    data = make_rect_dataset(tmp_path / "ds", n=5)
    cfg = tiny_cfg(tmp_path)
    model = Darknet.from_cfg(cfg)
    randomize(model, 3)
    weights = tmp_path / "m.weights"
    model.save_weights(weights)
    return data, cfg, weights, model.eval()


def test_detect_equals_the_map_pipeline(setup):
    data, cfg, weights, model = setup
    images = read_data_file(data).images("valid")
    got = list(detect(model, images, thresh=0.2))
    assert sum(len(d) for _, _, d in got) > 0
    from darknet_kd.data.dataset import EvalDataset, collate

    ds = EvalDataset(images, 2, 96, 96, False)
    x, _, infos = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        ref = detect_batch(model, x, infos, darknet_row_order(model))
    for (path, size, dets), (boxes, probs) in zip(got, ref):
        pairs = sorted((d.det_index, d.class_id, round(d.confidence, 5)) for d in dets)
        expect = sorted((int(i), int(c), round(float(probs[i, c]), 5)) for i, c in zip(*np.nonzero(probs > 0.2)))
        assert pairs == expect
        assert size == (96, 96)
        for d in dets:
            np.testing.assert_allclose(d.box, boxes[d.det_index], rtol=1e-6)


def test_detect_command_writes_darknet_json_and_drawings(setup, tmp_path, capsys):
    data, cfg, weights, _ = setup
    out = tmp_path / "out"
    assert main(["detect", str(data), str(cfg), str(weights), str(tmp_path / "ds" / "images"), "--out", str(out),
                 "--thresh", "0.2"]) == 0
    frames = json.loads((out / "result.json").read_text())
    assert [f["frame_id"] for f in frames] == [1, 2, 3, 4, 5]
    objs = [o for f in frames for o in f["objects"]]
    assert objs and set(objs[0]) == {"class_id", "name", "confidence", "relative_coordinates"}
    assert set(objs[0]["relative_coordinates"]) == {"center_x", "center_y", "width", "height"}
    assert objs[0]["name"] in ("c0", "c1") and all(o["confidence"] > 0.2 for o in objs)
    drawn = cv2.imread(str(out / "0000.jpg"))
    orig = cv2.imread(str(tmp_path / "ds" / "images" / "0000.png"))
    assert drawn.shape == orig.shape
    assert "objects" in capsys.readouterr().out


def test_pseudo_label_writes_a_checked_darknet_dataset(setup, tmp_path):
    data, cfg, weights, model = setup
    images = read_data_file(data).images("valid")
    out = tmp_path / "pseudo"
    counts = pseudo_label(model, images, out, thresh=0.2, names=["c0", "c1"], progress=False)
    assert counts["images"] == 5 and counts["labels"] > 0
    listed = read_list(out / "train.txt")
    scores = json.loads((out / "scores.json").read_text())["scores"]
    total = 0
    for img, (path, _, dets) in zip(listed, detect(model, images, thresh=0.2)):
        labels = read_labels(label_path(img), 2)  # Darknet's rule finds them (JPEGImages -> labels)
        best = {}
        for d in dets:
            best.setdefault(d.det_index, d)
        assert len(labels) == len(best) == len(scores[img.name])
        assert sorted(scores[img.name], reverse=True) == scores[img.name]
        assert set(labels[:, 0].astype(int)) <= {d.class_id for d in best.values()}
        assert img.read_bytes() == path.read_bytes()
        total += len(labels)
    assert total == counts["labels"]
    assert main(["check", str(out / "pseudo.data")]) == 0


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such image"):
        image_paths(tmp_path / "nope.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        image_paths(tmp_path / "empty")
