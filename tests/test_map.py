"""Darknet's mAP (darknet_kd.eval.voc_map) against numbers worked out by hand, and
COCO mAP (darknet_kd.eval.coco) against pycocotools run directly."""
import json
import math

import numpy as np
import pytest

from darknet_kd.errors import DarknetKDError, DataError
from darknet_kd.eval import DarknetMap, box_iou_matrix, compute_map

# boxes are relative cx, cy, w, h
TA = [0.25, 0.25, 0.2, 0.2]
TB = [0.75, 0.25, 0.2, 0.2]
TC = [0.25, 0.75, 0.2, 0.2]
TD = [0.75, 0.75, 0.2, 0.2]
FAR = [0.5, 0.5, 0.05, 0.05]        # overlaps nothing above
TA_SHIFT = [0.27, 0.25, 0.2, 0.2]   # IoU with TA = 0.18*0.2 / (0.08 - 0.036) = 0.8181...


def one_class_set():
    """1 class, 2 truths; ranks TP(.9) dup-FP(.8) FP(.7) TP(.6)."""
    truths = [[[0, *TA], [0, *TB]]]
    boxes = [TA, TA_SHIFT, FAR, TB]
    probs = [[0.9], [0.8], [0.7], [0.6]]
    return [(boxes, probs)], truths


def test_iou_matches_hand_value():
    iou = box_iou_matrix(np.array([TA]), np.array([TA_SHIFT, TA, FAR]))
    assert iou.dtype == np.float32
    assert iou[0, 0] == pytest.approx(0.036 / 0.044, rel=1e-6)
    # float32 in Darknet's order: a box with itself is 0.99999964, not 1 (as in Darknet)
    assert iou[0, 1] == np.float32(0.99999964) and iou[0, 2] == 0.0


def test_one_class_all_point_modes():
    dets, truths = one_class_set()
    # prec 1, 1/2, 1/3, 1/2; rec 1/2, 1/2, 1/2, 1
    r0 = compute_map(dets, truths, 1, points=0)
    assert r0.ap[0] == pytest.approx(0.5 * 1 + 0.5 * 0.5, abs=1e-15)           # 0.75
    r11 = compute_map(dets, truths, 1, points=11)
    assert r11.ap[0] == pytest.approx((6 * 1 + 5 * 0.5) / 11, abs=1e-15)        # r=0..0.5 -> 1
    r101 = compute_map(dets, truths, 1, points=101)
    assert r101.ap[0] == pytest.approx((51 * 1 + 50 * 0.5) / 101, abs=1e-15)    # r=0..0.50 -> 1
    assert r0.map == r0.ap[0]
    assert (r0.detections_count, r0.unique_truth_count) == (4, 2)
    # at .25: TP .9, FP .8 (duplicate), FP .7, TP .6
    assert (r0.tp, r0.fp, r0.fn) == (2, 2, 0)
    assert r0.precision == pytest.approx(0.5) and r0.recall == 1.0
    assert r0.f1 == pytest.approx(2 / 3, rel=1e-6)
    assert r0.avg_iou == pytest.approx(0.5)  # (1 + 1) / 4


def test_best_f1_threshold_by_hand():
    from darknet_kd.eval.voc_map import best_f1_threshold

    # ranks TP .9, FP .8, TP .8 (a tie: cut after both), TP .6, FP .3; 4 truths.
    # F1 = 2 tp / (k + 4): k=1 .4, k=3 4/7, k=4 .75, k=5 6/9 -> .6 (the tie's k=2 is not a cut)
    prob = np.array([0.9, 0.8, 0.8, 0.6, 0.3], np.float32)
    t, f1 = best_f1_threshold(prob, np.array([1, 0, 1, 1, 0], bool), 4)
    assert t == pytest.approx(0.6) and f1 == pytest.approx(0.75)
    # only the tied pair is a TP: with k=2 allowed F1 would be 2/(2+1); the cut at .8 gives 2/(3+1)
    t, f1 = best_f1_threshold(np.array([0.9, 0.8, 0.8], np.float32), np.array([0, 0, 1], bool), 1)
    assert (t, f1) == (pytest.approx(0.8), pytest.approx(0.5))
    # equal F1: the higher threshold wins
    t, f1 = best_f1_threshold(np.array([0.9, 0.5, 0.4, 0.3], np.float32), np.array([1, 0, 0, 1], bool), 2)
    assert t == pytest.approx(0.9) and f1 == pytest.approx(2 / 3)  # k=1: 2/3; k=4: 4/6
    t, f1 = best_f1_threshold(np.array([0.9], np.float32), np.array([0], bool), 2)
    assert math.isnan(t) and f1 == 0.0
    # through DarknetMap: the one-class set ranks TP .9, FP .8, FP .7, TP .6 over 2 truths
    dets, truths = one_class_set()
    r = compute_map(dets, truths, 1)
    assert r.best_thresh == pytest.approx(0.9) and r.best_f1 == pytest.approx(2 / 3)  # k=1: 2/3; k=4: 4/6
    assert r.to_dict()["best_f1_thresh"] == pytest.approx(0.9)


def test_n_points_use_darknets_ofast_recall_levels():
    """Darknet (-Ofast) computes the 11 recall levels as k*(1/10): level 3 is
    0.30000000000000004, which a recall of exactly 3/10 does not reach."""
    truths = [[[0, (i + 0.5) / 10, 0.5, 0.05, 0.05] for i in range(10)]]
    on = [t[1:] for t in truths[0]]
    far = [0.5, 0.9, 0.05, 0.05]
    boxes = on[:3] + [far] * 3 + [on[3]]           # ranks TP TP TP FP FP FP TP
    probs = [[0.9 - 0.1 * i] for i in range(7)]
    r = compute_map([(boxes, probs)], truths, 1, points=11)
    # levels 0, .1, .2 -> 1; .30000000000000004 and .4 -> 4/7 (recall .4); .5 .. 1 -> 0
    assert r.ap[0] == pytest.approx((3 + 2 * 4 / 7) / 11, abs=1e-15)
    assert 3 * (1.0 / 10) > 0.3


def test_iou_threshold_is_strict_and_selectable():
    truths = [[[0, *TA], [0, *TB]]]
    dets = [([TA_SHIFT, TB], [[0.8], [0.6]])]                 # TA_SHIFT: IoU .818 with TA
    assert compute_map(dets, truths, 1, iou_thresh=0.81).ap[0] == 1.0
    r = compute_map(dets, truths, 1, iou_thresh=0.82)       # the .8 det is now a FP
    assert r.ap[0] == pytest.approx(0.5 * 0.5)             # ranks FP, TP: rec .5 at prec .5
    # strictly greater, compared in float32: a threshold equal to the IoU is no match,
    # the next float32 below it is
    half = [0.25 + 0.1, 0.25, 0.2, 0.2]                     # IoU with TA = 0.1*0.2/(0.08-0.02) = 1/3
    iou = box_iou_matrix(np.array([half]), np.array([TA]))[0, 0]
    below = float(np.nextafter(iou, np.float32(0)))
    assert compute_map([([half], [[0.9]])], [[[0, *TA]]], 1, iou_thresh=below).ap[0] == 1.0
    assert compute_map([([half], [[0.9]])], [[[0, *TA]]], 1, iou_thresh=float(iou)).ap[0] == 0.0


def test_two_classes_difficult_duplicates_ties():
    """The worked example of the module: 2 images, 2 classes, a difficult object."""
    truths = [[[0, *TA], [0, *TB], [1, *TC]], [[0, *TD]]]
    difficult = [[[1, *TD]], []]
    img0 = ([TA, TA_SHIFT, TD, TC, TB],
            [[0.9, 0.0],    # c0 -> TA: TP
             [0.8, 0.3],    # c0 -> TA again: FP; c1 hits nothing: FP
             [0.0, 0.7],    # c1 on the difficult object: dropped (but FP at .25)
             [0.0, 0.2],    # c1 -> TC: TP (below .25)
             [0.5, 0.0]])   # c0 -> TB: TP
    img1 = ([FAR, TD], [[0.8, 0.0],   # c0 FP, ties with img0's duplicate
                        [0.1, 0.0]])  # c0 -> TD: TP
    r = compute_map([img0, img1], truths, 2, difficult=difficult)
    # class 0: 3 truths, ranks .9 TP, .8 FP, .8 FP, .5 TP, .1 TP
    #   prec 1, 1/2, 1/3, 1/2, 3/5; rec 1/3, 1/3, 1/3, 2/3, 1
    ap0 = 1 / 3 * 1 + 1 / 3 * 0.6 + 1 / 3 * 0.6
    # class 1: 1 truth (the difficult one is not counted), ranks .3 FP, .2 TP
    ap1 = 1.0 * 0.5
    assert r.ap[0] == pytest.approx(ap0, abs=1e-15)
    assert r.ap[1] == pytest.approx(ap1, abs=1e-15)
    assert r.map == pytest.approx((ap0 + ap1) / 2, abs=1e-15)
    assert list(r.truth_count) == [3, 1] and r.detections_count == 7  # 8 pairs, 1 dropped
    assert list(r.tp_thresh) == [2, 0] and list(r.fp_thresh) == [2, 2]
    assert (r.tp, r.fp, r.fn) == (2, 4, 2)
    assert r.precision == pytest.approx(1 / 3, rel=1e-6) and r.recall == 0.5
    assert r.f1 == pytest.approx(0.4, rel=1e-6)
    assert r.avg_iou == pytest.approx(2 / 6, rel=1e-6)
    # 11 points, class 0: r<=1/3 -> 1, r in (1/3, 2/3] -> .6, r > 2/3 -> .6; class 1: all .5
    r11 = compute_map([img0, img1], truths, 2, difficult=difficult, points=11)
    assert r11.ap[0] == pytest.approx((4 * 1 + 7 * 0.6) / 11, abs=1e-15)
    assert r11.ap[1] == pytest.approx(0.5, abs=1e-15)
    # without the difficult list, the det on TD (class 1) is a plain FP at rank .7
    r_nd = compute_map([img0, img1], truths, 2)
    assert r_nd.ap[1] == pytest.approx(1.0 * (1 / 3))   # ranks .7 FP .3 FP .2 TP
    assert r_nd.detections_count == 8


def test_ties_keep_input_order():
    """Equal probs rank in input order (glibc's qsort is a stable merge sort)."""
    truths = [[[0, *TA]], [[0, *TB]]]
    fp_first = compute_map([([FAR], [[0.5]]), ([TB], [[0.5]])], truths, 1)
    tp_first = compute_map([([TB], [[0.5]]), ([FAR], [[0.5]])], [truths[1], truths[0]], 1)
    assert fp_first.ap[0] == pytest.approx(0.5 * 0.5)   # FP, TP: rec .5 reached at prec .5
    assert tp_first.ap[0] == pytest.approx(0.5 * 1.0)   # TP, FP
    # two equal-prob dets on one truth: the earlier one is the TP, in ranking and at .25
    r = compute_map([([TA_SHIFT, TA], [[0.5], [0.5]])], [[[0, *TA]]], 1)
    assert r.ap[0] == 1.0 and (r.tp, r.fp) == (1, 1)
    assert r.avg_iou == pytest.approx((0.036 / 0.044) / 2, rel=1e-6)  # the TP is TA_SHIFT


def test_conf_thresh_counts_in_image_order_not_rank_order():
    """Darknet's TP at conf_thresh asks whether an earlier det *of this image, in
    detection order* claimed the truth -- even one below the threshold."""
    r = compute_map([([TA_SHIFT, TA], [[0.1], [0.9]])], [[[0, *TA]]], 1)
    assert r.ap[0] == 1.0               # in rank order .9 comes first and is the TP
    assert (r.tp, r.fp) == (0, 1)       # but at .25 it is a FP: the .1 det came first
    assert math.isnan(r.avg_iou) is False and r.avg_iou == 0.0


def test_best_iou_truth_wins_and_class_must_match():
    ta2 = [0.28, 0.25, 0.2, 0.2]          # IoU with TA_SHIFT .905 > TA's .818; with TA .739
    truths = [[[0, *TA], [1, *TA_SHIFT], [0, *ta2]]]
    # TA_SHIFT (.9) must take ta2 (best IoU, not the first truth above .5), leaving TA
    # to the exact det (.8); the identical class-1 truth is never a candidate for class 0
    r = compute_map([([TA_SHIFT, TA], [[0.9, 0.0], [0.8, 0.0]])], truths, 2)
    assert r.ap[0] == 1.0 and r.ap[1] == 0.0
    assert (r.tp, r.fp, r.fn) == (2, 0, 1)
    first_above = compute_map([([TA_SHIFT, TA], [[0.9, 0.0], [0.8, 0.0]])],
                              [[[0, *TA], [1, *TA_SHIFT]]], 2)
    assert first_above.ap[0] == 1.0 and (first_above.tp, first_above.fp) == (1, 1)


def test_sparse_pairs_equal_dense():
    truths = [[[0, *TA], [1, *TC]]]
    dense = compute_map([([TA, TC, FAR], [[0.9, 0.2], [0.0, 0.6], [0.3, 0.3]])], truths, 2)
    sparse = compute_map([([TA, TA, TC, FAR, FAR], [0, 1, 1, 0, 1], [0.9, 0.2, 0.6, 0.3, 0.3])],
                         truths, 2)
    np.testing.assert_array_equal(dense.ap, sparse.ap)
    assert (dense.tp, dense.fp, dense.detections_count) == (sparse.tp, sparse.fp, sparse.detections_count)


def test_classes_without_truths_or_detections_count_in_map():
    r = compute_map([([TA], [[1.0, 0.0, 0.0]])], [[[0, *TA]]], 3)
    assert list(r.ap) == [1.0, 0.0, 0.0] and r.map == pytest.approx(1 / 3)
    empty = compute_map([([], np.zeros((0, 3)))], [[[0, *TA]]], 3)
    assert empty.map == 0.0 and empty.detections_count == 0 and empty.fn == 1
    assert math.isnan(empty.precision)  # 0/0, printed as -nan like Darknet on x86-64
    assert "precision = -nan, recall = 0.00, F1-score = -nan" in empty.format_report()


def test_streaming_equals_batch_and_order_of_adding():
    rng = np.random.default_rng(0)
    C, imgs = 4, []
    for _ in range(30):
        g = rng.integers(0, 6)
        t = np.c_[rng.integers(0, C, g), rng.uniform(0.2, 0.8, (g, 2)), rng.uniform(0.05, 0.3, (g, 2))]
        n = rng.integers(0, 12)
        jitter = rng.normal(0, 0.03, (n, 4))
        src = t[rng.integers(0, max(g, 1), n), 1:] if g else rng.uniform(0.1, 0.9, (n, 4))
        boxes = np.abs(src + jitter)
        probs = rng.uniform(0, 1, (n, C)) * (rng.uniform(0, 1, (n, C)) < 0.4)
        imgs.append(((boxes, probs), t))
    batch = compute_map([d for d, _ in imgs], [t for _, t in imgs], C, points=101)
    acc = DarknetMap(C)
    for d, t in imgs:
        acc.add_image(*d, t)
    streamed = acc.result(101)
    np.testing.assert_array_equal(batch.ap, streamed.ap)
    assert 0 < batch.map < 1 and batch.detections_count > 100
    assert batch.map == pytest.approx(batch.ap.mean(), abs=1e-15)


def test_report_lines_are_darknets_printf():
    dets, truths = one_class_set()
    text = compute_map(dets, truths, 1, points=11).format_report(["car"])
    assert "\n detections_count = 4, unique_truth_count = 2  \n" in text
    assert "class_id = 0, name = car, ap = 77.27%   \t (TP = 2, FP = 2) \n" in text
    assert "\n for conf_thresh = 0.25, precision = 0.50, recall = 1.00, F1-score = 0.67 \n" in text
    assert " for conf_thresh = 0.25, TP = 2, FP = 2, FN = 0, average IoU = 50.00 % \n" in text
    assert "\n IoU threshold = 50 %, used 11 Recall-points \n" in text
    assert " mean average precision (mAP@0.50) = 0.772727, or 77.27 % \n" in text
    auc = compute_map(dets, truths, 1).format_report(["car"])
    assert "used Area-Under-Curve for each unique Recall \n" in auc
    d = compute_map(dets, truths, 1).to_dict(["car"])
    json.dumps(d)
    assert d["classes"][0] == {"class_id": 0, "name": "car", "ap": 0.75, "truths": 2, "detections": 4,
                               "tp": 2, "fp": 2, "average_iou": pytest.approx(0.5, rel=1e-6)}
    assert "| 0 | car | 75.00 | 2 | 2 | 2 |" in compute_map(dets, truths, 1).to_markdown(["car"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="truth object #1"):
        compute_map([([TA], [[0.5]])], [[[0, *TA], [3, *TB]]], 1)
    with pytest.raises(DarknetKDError, match="2 classes, expected 1"):
        compute_map([([TA], [[0.5, 0.1]])], [[[0, *TA]]], 1)
    with pytest.raises(DarknetKDError, match="NaN"):
        compute_map([([[np.nan, 0, 0, 0]], [[0.5]])], [[]], 1)
    with pytest.raises(DarknetKDError, match="points"):
        compute_map([([TA], [[0.5]])], [[]], 1, points=1)
    with pytest.raises(DarknetKDError, match="iou_thresh"):
        DarknetMap(1, iou_thresh=1.0)
    with pytest.raises(DarknetKDError, match="2 detection lists for 1"):
        compute_map([([TA], [[0.5]])] * 2, [[]], 1)


# ---------------------------------------------------------------- COCO (pycocotools)

def _coco_set(root, seed=0, C=3, n_images=12):
    """A Darknet dataset on disk (PNG images 512x256, labels, list, names, .data) and
    the same truths/detections in absolute pixels as COCO JSON built by hand.
    512x256 makes the relative coordinates exact binary fractions."""
    import cv2
    rng = np.random.default_rng(seed)
    W, H = 512, 256
    (root / "img").mkdir()
    lines, dets, abs_gt, abs_dt, images = [], [], [], [], []
    for i in range(n_images):
        path = root / "img" / f"{i}.png"
        cv2.imwrite(str(path), np.zeros((H, W, 3), np.uint8))
        lines.append(str(path))
        images.append({"id": i + 1, "file_name": f"img/{i}.png", "width": W, "height": H})
        g = int(rng.integers(0, 6))
        x1, y1 = rng.integers(0, W - 100, g), rng.integers(0, H - 80, g)
        w, h = rng.integers(4, 100, g), rng.integers(4, 80, g)
        cls = rng.integers(0, C, g)
        rel = np.c_[cls, (x1 + w / 2) / W, (y1 + h / 2) / H, w / W, h / H]
        (root / "img" / f"{i}.txt").write_text("".join(f"{int(r[0])} {float(r[1])!r} {float(r[2])!r} {float(r[3])!r} {float(r[4])!r}\n" for r in rel))
        abs_gt += [(i + 1, int(c), [float(a), float(b), float(cw), float(ch)]) for c, a, b, cw, ch in zip(cls, x1, y1, w, h)]
        n = int(rng.integers(0, 10))
        pick = rng.integers(0, max(g, 1), n)
        jit = rng.integers(-6, 7, (n, 4)) * 0.5
        if g:
            bx1 = np.clip(x1[pick] + jit[:, 0], 0, W - 8); by1 = np.clip(y1[pick] + jit[:, 1], 0, H - 8)
            bw = np.clip(w[pick] + jit[:, 2], 2, W - bx1); bh = np.clip(h[pick] + jit[:, 3], 2, H - by1)
            dcls = np.where(rng.uniform(size=n) < 0.8, cls[pick], rng.integers(0, C, n))
        else:
            bx1, by1 = rng.integers(0, W - 50, n) * 1.0, rng.integers(0, H - 50, n) * 1.0
            bw, bh = np.full(n, 20.0), np.full(n, 20.0)
            dcls = rng.integers(0, C, n)
        score = np.round(rng.uniform(0.01, 1, n), 3).astype(np.float32)
        dets.append((np.c_[(bx1 + bw / 2) / W, (by1 + bh / 2) / H, bw / W, bh / H], dcls, score))
        abs_dt += [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": [float(a), float(b), float(cw), float(ch)],
                    "score": float(s)} for c, a, b, cw, ch, s in zip(dcls, bx1, by1, bw, bh, score)]
    (root / "valid.txt").write_text("\n".join(lines) + "\n")
    (root / "obj.names").write_text("".join(f"c{c}\n" for c in range(C)))
    (root / "obj.data").write_text(f"classes={C}\nvalid=valid.txt\nnames=obj.names\n")
    gt_json = {"images": images, "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(C)],
               "annotations": [{"id": k + 1, "image_id": im, "category_id": c + 1, "bbox": b,
                                "area": b[2] * b[3], "iscrowd": 0} for k, (im, c, b) in enumerate(abs_gt)]}
    return root / "obj.data", dets, gt_json, abs_dt


def test_coco_map_equals_pycocotools_run_directly(tmp_path, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from darknet_kd.data.convert import to_coco
    from darknet_kd.eval.coco import coco_map

    C = 3
    data, dets, gt_json, dt_json = _coco_set(tmp_path, C=C)
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "dt.json").write_text(json.dumps(dt_json))
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
    capsys.readouterr()

    ours = coco_map(to_coco(data), dets)
    assert len(dt_json) > 30 and 0.1 < ev.stats[0] < 0.95
    np.testing.assert_array_equal(ours.stats, np.asarray(ev.stats))
    assert ours.map == ev.stats[0]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in ours.summary
    assert capsys.readouterr().out == ""  # pycocotools' chatter is captured
    # per class = mean over IoUs and recalls of pycocotools' precision for that class
    p = ev.eval["precision"][:, :, 1, 0, -1]
    assert ours.per_class_ap[1] == pytest.approx(p[p > -1].mean())
    assert json.dumps(ours.to_dict([f"c{c}" for c in range(C)]))


def test_coco_dense_probs_clipping_and_no_detections():
    from darknet_kd.eval.coco import coco_map, dets_to_coco

    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 50}],
          "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [40, 15, 20, 20],
                           "area": 400, "iscrowd": 0}]}
    perfect = coco_map(gt, [([[0.5, 0.5, 0.2, 0.4]], [[0.0, 0.9]])])
    assert perfect.stats[0] == pytest.approx(1.0)
    assert np.isnan(perfect.per_class_ap[0]) and perfect.per_class_ap[1] == pytest.approx(1.0)
    # every class with prob > 0 is a result; a box reaching outside the image is clipped
    # like Darknet's print_cocos
    res = dets_to_coco(gt, [([[0.05, 0.5, 0.2, 0.4]], [[0.3, 0.2]])])
    assert res == [{"image_id": 7, "category_id": 1, "bbox": pytest.approx([0, 15, 15, 20]), "score": pytest.approx(0.3)},
                   {"image_id": 7, "category_id": 5, "bbox": pytest.approx([0, 15, 15, 20]), "score": pytest.approx(0.2)}]
    assert coco_map(gt, [([], np.zeros((0, 2)))]).stats[0] == 0.0
    with pytest.raises(DarknetKDError, match="2 detection lists for 1 images"):
        dets_to_coco(gt, [([], np.zeros((0, 2)))] * 2)
