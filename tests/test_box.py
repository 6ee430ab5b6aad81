"""darknet_kd.box against hand-computed values and a scalar port of Darknet's src/box.c."""
import math
import random

import pytest
import torch

from darknet_kd import box


# -- scalar reference, transcribed from src/box.c (box_iou, box_giou, box_diou, box_ciou) ----------
def _overlap(x1, w1, x2, w2):
    return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)


def ref_iou(a, b):
    w, h = _overlap(a[0], a[2], b[0], b[2]), _overlap(a[1], a[3], b[1], b[3])
    i = 0.0 if (w < 0 or h < 0) else w * h
    u = a[2] * a[3] + b[2] * b[3] - i
    return 0.0 if (i == 0 or u == 0) else i / u


def _enclosing(a, b):
    top, bot = min(a[1] - a[3] / 2, b[1] - b[3] / 2), max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left, right = min(a[0] - a[2] / 2, b[0] - b[2] / 2), max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    return right - left, bot - top


def ref_giou(a, b):
    w, h = _enclosing(a, b)
    c = w * h
    i = ref_iou(a, b)
    if c == 0:
        return i
    w_, h_ = _overlap(a[0], a[2], b[0], b[2]), _overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if (w_ < 0 or h_ < 0) else w_ * h_
    u = a[2] * a[3] + b[2] * b[3] - inter
    return i - (c - u) / c


def ref_diou(a, b, beta):
    w, h = _enclosing(a, b)
    c = w * w + h * h
    i = ref_iou(a, b)
    if c == 0:
        return i
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return i - (d / c) ** beta


def ref_ciou(a, b):
    w, h = _enclosing(a, b)
    c = w * w + h * h
    i = ref_iou(a, b)
    if c == 0:
        return i
    d = ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / c
    ar = 4 / math.pi ** 2 * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
    alpha = ar / (1 - i + ar + 0.000001)
    return i - (d + alpha * ar)


def _random_boxes(n, seed):
    rng = random.Random(seed)
    return [[rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.02, 0.5), rng.uniform(0.02, 0.5)]
            for _ in range(n)]


def test_codec_round_trip_and_values():
    xywh = torch.tensor([[0.5, 0.4, 0.2, 0.6], [10.0, 20.0, 4.0, 2.0]])
    xyxy = box.xywh_to_xyxy(xywh)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.1, 0.6, 0.7], [8.0, 19.0, 12.0, 21.0]]))
    assert torch.allclose(box.xyxy_to_xywh(xyxy), xywh)


def test_hand_computed_values():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])            # [-1,1]^2
    b = torch.tensor([1.0, 0.0, 2.0, 2.0])            # [0,2]x[-1,1]: I=2, U=6
    assert box.iou(a, b).item() == pytest.approx(1 / 3)
    assert box.iou(a, b, "giou").item() == pytest.approx(1 / 3)   # enclosing = union
    # c² = 3² + 2² = 13, d² = 1
    assert box.iou(a, b, "diou").item() == pytest.approx(1 / 3 - 1 / 13)
    assert box.iou(a, b, "diou", diou_beta=0.6).item() == pytest.approx(1 / 3 - (1 / 13) ** 0.6, rel=1e-5)
    assert box.iou(a, b, "ciou").item() == pytest.approx(1 / 3 - 1 / 13)  # same aspect: v = 0
    far = torch.tensor([5.0, 0.0, 2.0, 2.0])         # disjoint: C = 7*2 = 14, U = 8
    assert box.iou(a, far).item() == 0.0
    assert box.iou(a, far, "giou").item() == pytest.approx(-6 / 14)
    same = box.iou(a, a, "ciou")
    assert same.item() == pytest.approx(1.0)
    zero = torch.tensor([0.0, 0.0, 0.0, 0.0])
    assert box.iou(zero, zero).item() == 0.0 and box.iou(zero, zero, "giou").item() == 0.0


@pytest.mark.parametrize("kind", box.KINDS)
def test_matches_darknet_box_c(kind):
    boxes_a, boxes_b = _random_boxes(60, 1), _random_boxes(60, 2)
    ref = {"iou": ref_iou, "giou": ref_giou, "diou": lambda a, b: ref_diou(a, b, 1.0), "ciou": ref_ciou}[kind]
    got = box.iou(torch.tensor(boxes_a, dtype=torch.float64), torch.tensor(boxes_b, dtype=torch.float64), kind)
    want = torch.tensor([ref(a, b) for a, b in zip(boxes_a, boxes_b)], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)
    assert (got < 0).any() or kind == "iou"   # the random set contains disjoint pairs


def test_pairwise_and_xyxy():
    a = torch.tensor(_random_boxes(5, 3), dtype=torch.float64)
    b = torch.tensor(_random_boxes(7, 4), dtype=torch.float64)
    m = box.pairwise_iou(a, b, "giou")
    assert m.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            assert m[i, j].item() == pytest.approx(ref_giou(a[i].tolist(), b[j].tolist()), abs=1e-12)
    m2 = box.pairwise_iou(box.xywh_to_xyxy(a), box.xywh_to_xyxy(b), "giou", fmt="xyxy")
    assert torch.allclose(m, m2, atol=1e-12)
    batched = box.pairwise_iou(a.expand(2, 5, 4), b.expand(2, 7, 4))
    assert batched.shape == (2, 5, 7)


def test_bad_kind():
    with pytest.raises(ValueError, match="IoU kind"):
        box.iou(torch.zeros(4), torch.zeros(4), "foo")
