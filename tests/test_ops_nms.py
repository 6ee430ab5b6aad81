"""darknet_kd.ops.nms against a Darknet-literal Python reference and cv2.dnn.NMSBoxes."""
import cv2
import numpy as np
import pytest
import torch

from darknet_kd import ops
from darknet_kd.errors import OpError
from ops_reference import reference_nms


def random_dets(n, c, images=1, seed=0, size=(0.02, 0.3)):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g)
    wh = torch.rand(n, 2, generator=g) * (size[1] - size[0]) + size[0]
    scores = torch.rand(n, c, generator=g)
    batch = torch.randint(0, images, (n,), generator=g)
    return torch.cat([xy, wh], 1), scores, batch


@pytest.mark.parametrize("kind", ["default", "greedynms", "diounms", "cornersnms"])
@pytest.mark.parametrize("thresh", [0.3, 0.45, 0.7])
def test_matches_reference_multi_image_multi_class(kind, thresh):
    boxes, scores, batch = random_dets(600, 4, images=3, seed=int(thresh * 100))
    got = ops.nms_mask(boxes, scores, thresh, score_thresh=0.3, batch=batch, kind=kind, beta_nms=0.8)
    want = reference_nms(boxes, scores, thresh, 0.3, batch, kind=kind, beta=0.8)
    assert torch.equal(got, want)
    assert 0 < int(got.sum()) < int((scores > 0.3).sum())  # something kept, something removed


def test_max_det_and_result_order():
    boxes, scores, batch = random_dets(500, 3, images=2, seed=3)
    got = ops.nms(boxes, scores, 0.5, score_thresh=0.1, batch=batch, max_det=40)
    want = reference_nms(boxes, scores, 0.5, 0.1, batch, max_det=40)
    mask = torch.zeros_like(want)
    mask[got.index, got.cls] = True
    assert torch.equal(mask, want)
    assert len(got.index) == 80
    b = batch[got.index]
    assert torch.all(b[1:] >= b[:-1])
    for img in range(2):
        s = got.score[b == img]
        assert torch.all(s[1:] <= s[:-1])
    assert torch.equal(got.score, scores[got.index, got.cls])


def _cv2_keep(boxes, scores, score_thresh, nms_thresh):
    tl = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], 1).double().numpy()
    k = cv2.dnn.NMSBoxes(tl.tolist(), scores.double().numpy().tolist(), score_thresh, nms_thresh)
    return sorted(np.asarray(k, dtype=np.int64).ravel().tolist())


@pytest.mark.parametrize("n", [50, 1000, 3000])
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_matches_cv2_nmsboxes(n, thresh):
    """Plain IoU, one class, distinct scores: the keep set is cv2.dnn.NMSBoxes's."""
    boxes, scores, _ = random_dets(n, 1, seed=n)
    boxes = boxes * 640
    scores = scores[:, 0]
    got = ops.nms(boxes, scores, thresh, score_thresh=0.2)
    assert sorted(got.index.tolist()) == _cv2_keep(boxes, scores, 0.2, thresh)


def test_ties_and_score_threshold_conventions_match_cv2():
    """Equal scores: the lower index wins (cv2 stable-sorts; Darknet's qsort leaves it
    open).  A score equal to score_thresh is not a candidate (both use >)."""
    boxes = torch.tensor([[10, 10, 10, 10], [11, 10, 10, 10], [30, 30, 10, 10], [31, 30, 10, 10],
                          [60, 60, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.2])
    got = ops.nms(boxes, scores, 0.5, score_thresh=0.2)
    assert sorted(got.index.tolist()) == [0, 2] == _cv2_keep(boxes, scores, 0.2, 0.5)
    # Reversed index order: the other box of each pair wins.
    got = ops.nms(boxes.flip(0).contiguous(), scores.flip(0).contiguous(), 0.5, score_thresh=0.1)
    assert sorted(got.index.tolist()) == [0, 1, 3]
    # IoU exactly at the threshold is not suppressed (Darknet and cv2: IoU > thresh).
    half = torch.tensor([[0.5, 0.5, 1.0, 1.0], [1.0, 0.5, 1.0, 1.0]])  # IoU = 0.5/1.5 = 1/3
    s = torch.tensor([0.9, 0.8])
    assert len(ops.nms(half, s, 1 / 3).index) == 2
    assert len(ops.nms(half, s, 0.33).index) == 1


def test_zero_area_boxes_follow_darknet_not_cv2():
    """Darknet's box_iou is 0 when the union is 0, so identical zero-area boxes both stay;
    cv2's jaccardDistance calls them identical and suppresses one (documented difference)."""
    boxes = torch.tensor([[5.0, 5.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [5.0, 5.0, 0.0, 3.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = ops.nms_mask(boxes, scores, 0.45)
    assert got[:, 0].tolist() == [True, True, True]
    assert torch.equal(got, reference_nms(boxes, scores, 0.45))
    assert _cv2_keep(boxes, scores, 0.0, 0.45) == [0]  # all three have area 0


def test_adversarial_inputs():
    # Empty input.
    e = ops.nms(torch.zeros(0, 4), torch.zeros(0, 3), 0.5)
    assert e.index.numel() == 0 and e.cls.numel() == 0
    # All boxes identical, equal scores: only the first survives.
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(100, 1)
    keep = ops.nms_mask(boxes, torch.full((100,), 0.7), 0.5)
    assert keep[:, 0].nonzero().flatten().tolist() == [0]
    # NaN and -inf scores are never candidates; NaN boxes suppress nothing.
    boxes, scores, _ = random_dets(300, 2, seed=5)
    scores[::7, 0] = float("nan")
    scores[::5, 1] = float("-inf")
    boxes[::11] = float("nan")
    got = ops.nms_mask(boxes, scores, 0.45)
    assert torch.equal(got, reference_nms(boxes, scores, 0.45))
    assert not got[::7, 0].any() and not got[::5, 1].any()
    # Thousands of classes, few boxes.
    boxes, scores, batch = random_dets(60, 3000, images=2, seed=6)
    got = ops.nms_mask(boxes, scores, 0.3, score_thresh=0.9, batch=batch)
    assert torch.equal(got, reference_nms(boxes, scores, 0.3, 0.9, batch))
    # A negative threshold suppresses every later box of the class, padding lanes never do.
    boxes, scores, _ = random_dets(40, 1, seed=7)
    got = ops.nms_mask(boxes, scores, -0.1)
    assert int(got.sum()) == 1 and bool(got[scores[:, 0].argmax(), 0])


def test_thread_count_does_not_change_result():
    boxes, scores, batch = random_dets(4000, 6, images=5, seed=8)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.nms_mask(boxes, scores, 0.45, score_thresh=0.2, batch=batch, max_det=100)
        torch.set_num_threads(4)
        four = ops.nms_mask(boxes, scores, 0.45, score_thresh=0.2, batch=batch, max_det=100)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, four)


def test_bad_arguments_raise_op_error():
    boxes, scores, batch = random_dets(10, 2)
    with pytest.raises(OpError, match="boxes has dtype float64"):
        ops.nms(boxes.double(), scores, 0.5)
    with pytest.raises(OpError, match=r"boxes has shape \(10, 3\)"):
        ops.nms(boxes[:, :3].contiguous(), scores, 0.5)
    with pytest.raises(OpError, match="scores is not contiguous"):
        ops.nms(boxes, torch.rand(2, 10).t(), 0.5)
    with pytest.raises(OpError, match=r"scores has shape \(9, 2\)"):
        ops.nms(boxes, scores[:9], 0.5)
    with pytest.raises(OpError, match="batch has dtype int32"):
        ops.nms(boxes, scores, 0.5, batch=batch.int())
    with pytest.raises(OpError, match=r"batch\[\d+\]=\d+ is outside \[0, 1\)"):
        ops.nms(boxes, scores, 0.5, batch=torch.arange(10), num_images=1)
    with pytest.raises(OpError, match="iou_thresh=nan"):
        ops.nms(boxes, scores, float("nan"))
    with pytest.raises(OpError, match="kind='soft'"):
        ops.nms(boxes, scores, 0.5, kind="soft")
    with pytest.raises(OpError, match="beta_nms"):
        ops.nms(boxes, scores, 0.5, kind="diounms", beta_nms=0.0)
    with pytest.raises(OpError, match="max_det=0"):
        ops.nms(boxes, scores, 0.5, max_det=0)
    with pytest.raises(OpError, match="must be a torch.Tensor"):
        ops.nms(boxes.numpy(), scores, 0.5)
    if not ops.core_info()["cuda_compiled"] and torch.cuda.is_available():  # pragma: no cover
        with pytest.raises(OpError, match="without CUDA"):
            ops.nms(boxes.cuda(), scores.cuda(), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available() or not ops.core_info()["cuda_devices"], reason="no CUDA GPU")
@pytest.mark.parametrize("kind", ["default", "greedynms", "diounms"])
def test_cuda_equals_cpu(kind):
    boxes, scores, batch = random_dets(5000, 5, images=4, seed=10)
    cpu = ops.nms_mask(boxes, scores, 0.45, score_thresh=0.2, batch=batch, kind=kind, max_det=300)
    gpu = ops.nms_mask(boxes.cuda(), scores.cuda(), 0.45, score_thresh=0.2, batch=batch.cuda(), kind=kind,
                       max_det=300)
    assert torch.equal(gpu.cpu(), cpu)
    one = ops.nms_mask(boxes.cuda() * 640, scores[:, 0].contiguous().cuda(), 0.5)
    assert torch.equal(one.cpu(), ops.nms_mask(boxes * 640, scores[:, 0].contiguous(), 0.5))
