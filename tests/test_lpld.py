"""Source-free adaptation: strong views, HPL/LPL mining, the LPLD loss, the mean teacher, and
a short adaptation run that must beat the source model on a shifted target domain."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknet_kd.data.darknet import DataConfig, read_data_file, write_data_file
from darknet_kd.data.dataset import AugmentOptions, TrainDataset
from darknet_kd.data.strong_aug import ERASINGS, PairDataset, StrongAugment, erase_box
from darknet_kd.errors import CheckpointError, DarknetKDError, DataError
from darknet_kd.eval.evaluate import evaluate
from darknet_kd.loss.lpld import (LpldOptions, cell_log_probs, default_feature_layer, feature_weight, flatten_heads,
                                  lpld_kl, mine_hpl, mine_lpl, roi_mean_pool)
from darknet_kd.model import Darknet, load
from darknet_kd.train.adapt import AdaptOptions, AdaptTrainer
from darknet_kd.train.trainer import Trainer, TrainOptions

from synthetic import make_rect_dataset, tiny_cfg

NO_AUG = dict(jitter_p=0, gray_p=0, blur_p=0, erasings=())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the CI machine's two cores are shared, and two threads that wait for
    each other run these small models several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ strong augmentation

def _rect_image(seed=0, size=64):
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
    img[10:30, 8:40] = (220, 40, 40)
    img[40:60, 30:50] = (40, 60, 220)
    return img


def test_colour_ops_are_pointwise_so_boxes_stay_on_their_objects():
    """Jitter and grayscale map equal input colours to equal output colours: no pixel moves,
    so every box of the weak view is valid on the strong view."""
    img = _rect_image()
    aug = StrongAugment(jitter_p=1.0, gray_p=0.5, blur_p=0, erasings=())
    for s in range(20):
        out = aug(img, np.random.default_rng(s))
        assert out.shape == img.shape and out.dtype == np.uint8
        keys = img.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
        _, inverse = np.unique(keys, return_inverse=True)
        flat = out.reshape(-1, 3).astype(np.int64)
        for c in range(3):
            lo = np.full(inverse.max() + 1, 256)
            hi = np.full(inverse.max() + 1, -1)
            np.minimum.at(lo, inverse, flat[:, c])
            np.maximum.at(hi, inverse, flat[:, c])
            assert (lo == hi).all()
        # the red rectangle is still a uniform block at the same place, distinct from its surround
        block = out[10:30, 8:40].reshape(-1, 3)
        assert (block == block[0]).all()
    gray = StrongAugment(jitter_p=0, gray_p=1.0, blur_p=0, erasings=())(img, np.random.default_rng(0))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert abs(int(gray[15, 15, 0]) - round(0.299 * 220 + 0.587 * 40 + 0.114 * 40)) <= 1


def test_erasing_changes_only_its_rectangles_and_respects_the_area_range():
    img = _rect_image(1, 96)
    for s in range(30):
        rng = np.random.default_rng(s)
        box = erase_box(96, 96, rng, (0.05, 0.2), (0.3, 3.3))
        if box is None:
            continue
        t, l, eh, ew = box
        assert 0 <= t and t + eh <= 96 and 0 <= l and l + ew <= 96
        assert 0.04 <= eh * ew / 96 ** 2 <= 0.21
    aug = StrongAugment(jitter_p=0, gray_p=0, blur_p=0, erasings=((1.0, (0.05, 0.2), (0.3, 3.3)),))
    out = aug(img, np.random.default_rng(3))
    changed = (out != img).any(-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 0.03 * 96 * 96
    # the changed pixels lie in one rectangle (noise may leave a few pixels equal by chance)
    assert changed[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean() > 0.95
    assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) <= 0.21 * 96 * 96
    assert [p for p, _, _ in ERASINGS] == [0.7, 0.5, 0.3]


def test_pair_dataset_shares_the_weak_geometry(tmp_path):
    data = read_data_file(make_rect_dataset(tmp_path, n=4, size=80))
    images = data.images("train")
    opts = AugmentOptions(jitter=0.2, flip=True, hue=0.1, saturation=1.5, exposure=1.5)
    plain = TrainDataset(images, 2, 64, 64, opts, seed=7)
    same = PairDataset(images, 2, 64, 64, opts, seed=7, strong=StrongAugment(**NO_AUG))
    strong = PairDataset(images, 2, 64, 64, opts, seed=7)
    for key in [(0, 64, 64, 11), (1, 64, 64, 12), (3, 64, 64, 99)]:
        img, boxes, _ = plain[key]
        pair, pboxes, _ = same[key]
        assert pair.shape == (6, 64, 64)
        assert torch.equal(pair[:3], img) and torch.equal(pair[3:], img) and torch.equal(boxes, pboxes)
        spair, sboxes, _ = strong[key]
        assert torch.equal(spair[:3], img) and torch.equal(sboxes, boxes)
        assert not torch.equal(spair[3:], img)


# ------------------------------------------------------------------ mining

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return Darknet.from_cfg(tiny_cfg(tmp_path_factory.mktemp("cfg"))).eval()


def _rows(spec, classes=2):
    """(N, 5+C) decoded rows from (cx, cy, w, h, obj, *class probs)."""
    return torch.tensor(spec, dtype=torch.float32).reshape(-1, 5 + classes)


def test_hpl_are_the_teachers_nms_survivors_above_the_threshold(tiny_model):
    rows = _rows([
        [0.30, 0.30, 0.20, 0.20, 0.90, 0.95, 0.10],   # 0: class 0, score .855
        [0.31, 0.30, 0.20, 0.20, 0.85, 0.90, 0.10],   # 1: same object, suppressed by 0
        [0.80, 0.80, 0.10, 0.10, 0.80, 0.50, 0.50],   # 2: scores .40: not confident
        [0.70, 0.20, 0.20, 0.30, 0.90, 0.90, 0.85],   # 3: both classes > .7
        [0.20, 0.80, 0.10, 0.10, 0.72, 0.99, 0.00],   # 4: .7128 > .7
    ])
    hpl = mine_hpl(tiny_model, rows[None], 0.7)
    assert len(hpl) == 1
    boxes, cls = hpl[0]
    got = sorted((round(float(b[0]), 2), round(float(b[1]), 2), int(c)) for b, c in zip(boxes, cls))
    assert got == [(0.2, 0.8, 0), (0.3, 0.3, 0), (0.7, 0.2, 0), (0.7, 0.2, 1)]
    assert [len(b) for b, _ in mine_hpl(tiny_model, torch.stack([rows, rows * 0.5]), 0.7)] == [4, 0]


def test_lpl_filters_one_by_one():
    hpl = torch.tensor([[0.30, 0.30, 0.20, 0.20]])
    rows = _rows([
        [0.30, 0.30, 0.20, 0.20, 0.90, 0.95, 0.10],   # 0: the HPL itself -> overlap
        [0.36, 0.30, 0.20, 0.20, 0.60, 0.95, 0.05],   # 1: IoU .54 with the HPL -> overlap
        [0.44, 0.30, 0.20, 0.20, 0.30, 0.90, 0.05],   # 2: IoU .18, q max .947 -> LPL
        [0.80, 0.80, 0.10, 0.10, 0.20, 0.50, 0.40],   # 3: q max .556 -> class filter
        [0.80, 0.20, 0.10, 0.10, 0.005, 0.99, 0.0],   # 4: background .995 > .99 -> not a proposal
        [0.45, 0.30, 0.20, 0.20, 0.25, 0.90, 0.05],   # 5: IoU .90 with 2, lower objectness -> proposal NMS
        [0.15, 0.80, 0.10, 0.20, 0.05, 0.02, 0.60],   # 6: q = (.032, .968) -> LPL
    ])
    m = mine_lpl(rows, hpl, LpldOptions())
    assert m.proposals.tolist() == [0, 1, 2, 3, 6]          # by objectness; 4 under the floor, 5 suppressed
    assert m.low_overlap.tolist() == [False, False, True, True, True]
    assert m.class_ok.tolist() == [True, True, True, False, True]
    assert m.index.tolist() == [2, 6]
    assert mine_lpl(rows, hpl, LpldOptions(top_k=3)).index.tolist() == [2]
    assert mine_lpl(rows, hpl, LpldOptions(max_hpl_iou=0.6)).index.tolist() == [1, 2, 6]
    assert mine_lpl(rows, hpl, LpldOptions(fg_min=0.5)).index.tolist() == [2, 3, 6]
    assert mine_lpl(rows, torch.zeros((0, 4)), LpldOptions()).index.tolist() == []  # no HPL: no LPL


# ------------------------------------------------------------------ loss pieces

def test_roi_mean_pool_matches_slicing():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.05, 0.9, 0.1, 0.3], [0.5, 0.5, 2.0, 2.0], [0.99, 0.01, 0.001, 0.001]],
                         dtype=torch.float64)
    batch = torch.tensor([0, 1, 1, 0])
    got = roi_mean_pool(feat, batch, boxes)
    for k, (cx, cy, w, h) in enumerate(boxes.tolist()):
        c0 = min(max(math.floor((cx - w / 2) * 9), 0), 8)
        r0 = min(max(math.floor((cy - h / 2) * 7), 0), 6)
        c1 = max(min(math.ceil((cx + w / 2) * 9), 9), c0 + 1)
        r1 = max(min(math.ceil((cy + h / 2) * 7), 7), r0 + 1)
        ref = feat[batch[k], :, r0:r1, c0:c1].mean((1, 2))
        assert torch.allclose(got[k], ref, atol=1e-10), k
    assert roi_mean_pool(feat, batch[:0], boxes[:0]).shape == (0, 5)


def test_feature_weight_is_one_minus_cosine():
    f = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    g = torch.tensor([[3.0, 0.0], [-1.0, -1.0], [1.0, 0.0]], requires_grad=True)
    w = feature_weight(f, g)
    assert torch.allclose(w, torch.tensor([0.0, 2.0, 1.0]), atol=1e-6)
    assert not w.requires_grad


def _reference_lpld(o, z, t_prob, w):
    """Plain torch: Σ w·KL([q_t, 1e-9] ‖ [σ(o)·q_s, 1 − σ(o)])."""
    q_t = t_prob / t_prob.sum(-1, keepdim=True)
    p_t = torch.cat([q_t, torch.full_like(q_t[:, :1], 1e-9)], 1)
    s = torch.sigmoid(z)
    q_s = s / s.sum(-1, keepdim=True)
    p_s = torch.cat([torch.sigmoid(o)[:, None] * q_s, 1 - torch.sigmoid(o)[:, None]], 1)
    p_t = p_t / p_t.sum(-1, keepdim=True)  # a softmax of log p_t: the 1e-9 entry renormalises
    return (w * (p_t * (p_t.log() - p_s.log())).sum(-1)).sum()


def test_lpld_kl_hand_computed_case_and_weighting():
    o = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([[1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    t_prob = torch.tensor([[0.9, 0.05]], dtype=torch.float64)
    # by hand: q_t = (.9, .05)/.95, q_s = σ(z)/Σσ(z), p_s = (σ(.3) q_s, 1 − σ(.3))
    so = 1 / (1 + math.exp(-0.3))
    s1, s2 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))
    qt = (0.9 / 0.95, 0.05 / 0.95)
    ps = (so * s1 / (s1 + s2), so * s2 / (s1 + s2))
    hand = sum(q * math.log(q / p) for q, p in zip(qt, ps)) + 1e-9 * math.log(1e-9 / (1 - so))
    got = lpld_kl(F.logsigmoid(o), F.logsigmoid(-o), F.logsigmoid(z), t_prob, torch.tensor([1.0], dtype=torch.float64))
    assert got.item() == pytest.approx(hand, rel=1e-6)
    half = lpld_kl(F.logsigmoid(o), F.logsigmoid(-o), F.logsigmoid(z), t_prob, torch.tensor([0.5], dtype=torch.float64))
    assert half.item() == pytest.approx(hand / 2, rel=1e-6)
    zero = lpld_kl(F.logsigmoid(o), F.logsigmoid(-o), F.logsigmoid(z), t_prob, torch.tensor([0.0], dtype=torch.float64))
    assert zero.item() == 0.0


def test_lpld_kl_gradient_matches_plain_torch():
    g = torch.Generator().manual_seed(1)
    o = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t_prob = torch.rand(6, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05
    w = torch.rand(6, generator=g, dtype=torch.float64)
    got = lpld_kl(F.logsigmoid(o), F.logsigmoid(-o), F.logsigmoid(z), t_prob, w)
    go, gz = torch.autograd.grad(got, (o, z))
    o2, z2 = o.detach().clone().requires_grad_(), z.detach().clone().requires_grad_()
    ref = _reference_lpld(o2, z2, t_prob, w)
    ro, rz = torch.autograd.grad(ref, (o2, z2))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(go, ro, atol=1e-7) and torch.allclose(gz, rz, atol=1e-7)
    # The KL raises the student's objectness and moves its classes toward the teacher's.
    assert (go < 0).all()


def test_cell_log_probs_follow_the_decoded_row_order(tiny_model):
    x = torch.rand(2, 3, 96, 96)
    heads = tiny_model(x, raw=True)
    dec = tiny_model(x)
    obj_lp, obj_l1mp, cls_lp = cell_log_probs(tiny_model, heads)
    assert torch.allclose(obj_lp.exp(), dec[..., 4], atol=1e-6)
    assert torch.allclose(obj_l1mp.exp(), 1 - dec[..., 4], atol=1e-6)
    assert torch.allclose(cls_lp.exp(), dec[..., 5:], atol=1e-6)
    assert flatten_heads(tiny_model, heads).shape == dec.shape
    assert default_feature_layer(tiny_model) == 5  # conv(32) feeding the output conv of the [yolo] at 7


def test_ignore_band_masks_the_slots_the_teacher_scores_in_the_band(tiny_model):
    """ignore_band: per [yolo] layer, the (B, A, H, W) slots whose decoded score obj · max
    class prob is >= the threshold, in the decoded rows' order; None when off."""
    from darknet_kd.train.adapt import ignore_band

    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        heads = tiny_model(x, raw=True)
        dec = tiny_model(x)
    assert ignore_band(tiny_model, heads, dec, None) is None
    score = dec[..., 4] * dec[..., 5:].max(-1).values
    thr = float(score.median())
    masks = ignore_band(tiny_model, heads, dec, thr)
    assert [tuple(m.shape) for m in masks] == [(2, len(y.mask), h.shape[2], h.shape[3])
                                               for y, h in zip(tiny_model.yolo_layers, heads)]
    flat = torch.cat([m.flatten(1) for m in masks], 1)
    assert torch.equal(flat, score >= thr) and 0 < int(flat.sum()) < flat.numel()
    # slot (b, a, j, i) of layer 0 is row a·H·W + j·W + i of the decoded rows
    y, h = tiny_model.yolo_layers[0], heads[0]
    b, a, j, i = 1, len(y.mask) - 1, h.shape[2] - 1, 0
    assert bool(masks[0][b, a, j, i]) == bool(score[b, (a * h.shape[2] + j) * h.shape[3] + i] >= thr)


# ------------------------------------------------------------------ the trainer

def _unlabelled_target(root: Path, n=8, seed=0, alpha=1.0, haze=170.0, valid_n=0):
    """A rect dataset whose train images lose their label files (hidden under labels_hidden/);
    images optionally hazed: v·alpha + haze·(1 − alpha).  With valid_n, a labelled hazed valid list."""
    data = make_rect_dataset(root / "train", n=n, seed=seed)
    hidden = root / "labels_hidden"
    hidden.mkdir(parents=True, exist_ok=True)
    for p in sorted((root / "train" / "images").glob("*.png")):
        if alpha != 1.0:
            img = cv2.imread(str(p)).astype(np.float32)
            cv2.imwrite(str(p), np.clip(img * alpha + haze * (1 - alpha), 0, 255).astype(np.uint8))
        shutil.move(str(p.with_suffix(".txt")), hidden / (p.stem + ".txt"))
    valid = None
    if valid_n:
        make_rect_dataset(root / "valid", n=valid_n, seed=seed + 1000)
        for p in sorted((root / "valid" / "images").glob("*.png")):
            img = cv2.imread(str(p)).astype(np.float32)
            cv2.imwrite(str(p), np.clip(img * alpha + haze * (1 - alpha), 0, 255).astype(np.uint8))
        valid = str(root / "valid" / "valid.txt")
    d = read_data_file(data)
    out = root / "target.data"
    write_data_file(out, DataConfig(classes=2, train=str(root / "train" / "train.txt"), valid=valid,
                                    names=d.names, backup=str(root / "backup")))
    return out


def _random_weights(tmp_path, cfg):
    torch.manual_seed(0)
    m = Darknet.from_cfg(cfg)
    w = tmp_path / "source.weights"
    m.save_weights(w)
    return w


def _topts(**kw):
    base = dict(workers=0, progress=False, seed=3, chart=False, save_every=1000)
    base.update(kw)
    return TrainOptions(**base)


def test_a_labelled_train_list_is_refused(tmp_path, capsys):
    labelled = make_rect_dataset(tmp_path / "src", n=4)
    cfg = tiny_cfg(tmp_path)
    w = _random_weights(tmp_path, cfg)
    with pytest.raises(DataError, match=r"train\.txt: 4 of 4 target training images have label files.*"
                                        r"--allow-train-labels"):
        AdaptTrainer(labelled, cfg, w, _topts(), AdaptOptions(method="mt"))
    AdaptTrainer(labelled, cfg, w, _topts(), AdaptOptions(method="mt", allow_train_labels=True))
    from darknet_kd.cli import main

    rc = main(["adapt", str(labelled), str(cfg), str(w), "--method", "lpld", "--quiet", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "darknet-kd adapt: error:" in err and "label files" in err and "Traceback" not in err


def test_teacher_ema_once_per_epoch_or_every_iteration(tmp_path):
    data = _unlabelled_target(tmp_path / "t", n=8)  # batch 4: 2 iterations an epoch
    cfg = tiny_cfg(tmp_path)
    w = _random_weights(tmp_path, cfg)
    tr = AdaptTrainer(data, cfg, w, _topts(), AdaptOptions(method="mt"))
    assert tr.iters_per_epoch == 2 and tr.model.net.max_batches == 20 and tr.model.net.policy == "constant"
    p_s = next(tr.model.parameters())
    p_t = next(tr.teacher.model.parameters())
    with torch.no_grad():
        p_s.add_(1.0)
    t0 = p_t.detach().clone()
    tr.iteration = 0
    tr.after_update()  # 1 of 2 iterations: no update
    assert torch.equal(p_t, t0)
    tr.iteration = 1
    tr.after_update()  # end of the epoch: θ_t = .75 θ_t + .25 θ_s
    assert torch.allclose(p_t, 0.75 * t0 + 0.25 * p_s.detach(), atol=1e-6)
    it = AdaptTrainer(data, cfg, w, _topts(), AdaptOptions(method="mt", ema_every="iter"))
    p_s, p_t = next(it.model.parameters()), next(it.teacher.model.parameters())
    with torch.no_grad():
        p_s.add_(1.0)
    t0 = p_t.detach().clone()
    it.iteration = 0
    it.after_update()
    assert torch.allclose(p_t, 0.999 * t0 + 0.001 * p_s.detach(), atol=1e-6)
    # the teacher is never trained by the optimiser
    assert not any(p.requires_grad for p in it.teacher.model.parameters())


def test_ignore_score_drops_background_terms_in_the_adaptation_loss(tmp_path):
    """A random teacher has no HPL (scores ≈ 0.25 < 0.7): without the band every slot is
    background; with --ignore-score below every score no slot is, so the obj loss vanishes."""
    data = _unlabelled_target(tmp_path / "t", n=4)
    cfg = tiny_cfg(tmp_path)
    w = _random_weights(tmp_path, cfg)
    torch.manual_seed(0)
    images = torch.rand(2, 6, 96, 96)
    parts = {}
    for score in (None, 1e-6):
        tr = AdaptTrainer(data, cfg, w, _topts(), AdaptOptions(method="mt", ignore_score=score))
        tr.model.train()
        _, parts[score] = tr.compute_loss(images, torch.zeros(0, 6), None)
        assert tr.stats["hpl"] == 0
    assert float(parts[None]["obj"]) > 0 and float(parts[1e-6]["obj"]) == 0
    with torch.no_grad():
        rows = tr.teacher.model(images[:, :3]).shape[1]
    assert tr.stats["ignored"] == 2 * rows  # every slot of both images
    with pytest.raises(DarknetKDError, match="--ignore-score"):
        AdaptOptions(ignore_score=1.5).check()


def test_lpld_term_is_the_weighted_mean_kl_of_the_mined_cells(tmp_path):
    data = _unlabelled_target(tmp_path / "t", n=4)
    cfg = tiny_cfg(tmp_path)
    w = _random_weights(tmp_path, cfg)
    # An untrained model is unsure of everything: open the class filter so LPL exist.
    opts = LpldOptions(fg_min=0.0, bg_max=1.0, max_hpl_iou=0.3)
    tr = AdaptTrainer(data, cfg, w, _topts(), AdaptOptions(method="lpld", lpld=opts))
    torch.manual_seed(0)
    weak, strong = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96)
    teacher, L = tr.teacher.model, tr.feature_layer
    with torch.no_grad():
        t_heads, t_feats = teacher(weak, keep=[L], raw=True)
    dec = torch.cat([y.decode(h, (96, 96)) for y, h in zip(teacher.yolo_layers, t_heads)], 1)
    hpl = [(dec[0, :1, :4].clone(), torch.zeros(1, dtype=torch.long)), (torch.zeros((0, 4)), torch.zeros(0).long())]
    tr.model.train()
    s_heads, s_feats = tr.model(strong, keep=[L])
    got = tr.lpld_loss(s_heads, s_feats[L], dec, t_feats[L], hpl)
    idx = mine_lpl(dec[0], hpl[0][0], opts).index
    assert 0 < len(idx) <= 300
    o = flatten_heads(tr.model, s_heads)[0, idx]
    fw = feature_weight(roi_mean_pool(s_feats[L], torch.zeros(len(idx), dtype=torch.long), dec[0, idx, :4]),
                        roi_mean_pool(t_feats[L], torch.zeros(len(idx), dtype=torch.long), dec[0, idx, :4]))
    assert (fw > 0).all()
    ref = 0.1 * _reference_lpld(o[:, 4].double(), o[:, 5:].double(), dec[0, idx, 5:].double(), fw.double()) / len(idx)
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)  # image 1 has no HPL: no term
    got.backward()
    assert next(tr.model.parameters()).grad is not None


def test_resume_restores_the_teacher(tmp_path):
    data = _unlabelled_target(tmp_path / "t", n=8)
    cfg = tiny_cfg(tmp_path)
    w = _random_weights(tmp_path, cfg)
    a = AdaptOptions(method="lpld", epochs=3, learning_rate=0.002)
    det = dict(deterministic=True)
    AdaptTrainer(data, cfg, w, _topts(backup=str(tmp_path / "full"), **det), a).run()

    class Killed(Exception):
        pass

    class Dies(AdaptTrainer):
        def after_update(self):
            super().after_update()
            if self.iteration == 4:
                raise Killed

    with pytest.raises(Killed):
        Dies(data, cfg, w, _topts(backup=str(tmp_path / "part"), save_every=3, **det), a).run()
    with pytest.raises(CheckpointError, match="adapt-lpld"):
        AdaptTrainer(data, cfg, w, _topts(backup=str(tmp_path / "part"), resume=True), AdaptOptions(method="mt"))
    AdaptTrainer(data, cfg, w, _topts(backup=str(tmp_path / "part"), resume=True, **det), a).run()
    full = (tmp_path / "full" / "tiny_final.weights").read_bytes()
    assert full == (tmp_path / "part" / "tiny_final.weights").read_bytes()
    assert full != Path(w).read_bytes()[:len(full)] or len(full) != len(Path(w).read_bytes())


@pytest.fixture(scope="module")
def shifted_domain(tmp_path_factory):
    """A source model trained on bright rectangles and a hazy target (contrast 0.6)."""
    root = tmp_path_factory.mktemp("shift")
    src = make_rect_dataset(root / "src", n=48, seed=1, valid=False)
    cfg = tiny_cfg(root, max_batches=400, steps=320)
    s = Trainer(src, cfg, None, _topts(seed=0, map_every=10 ** 6)).run()
    target = _unlabelled_target(root / "target", n=32, seed=2, alpha=0.6, valid_n=32)
    return cfg, Path(s["weights"]), target


def test_adaptation_beats_the_source_model_on_the_target(shifted_domain, tmp_path):
    cfg, weights, target = shifted_domain
    data = read_data_file(target)
    before = evaluate(load(cfg, weights), data, workers=0, progress=False).darknet.map
    for seed in (0, 1):
        for method in ("mt", "lpld"):
            a = AdaptOptions(method=method, epochs=5, learning_rate=0.001, lpld=LpldOptions(hpl_thresh=0.3))
            r = AdaptTrainer(target, cfg, weights, _topts(seed=seed, backup=str(tmp_path / f"{method}{seed}"),
                                                          map_every=10 ** 6), a).run()
            after = evaluate(load(cfg, r["weights"]), data, workers=0, progress=False).darknet.map
            assert r["hpl_per_image"] > 0  # the teacher's pseudo-labels did train the student
            assert r["det_loss_per_image"] > 0 and r["kd_loss_per_image"] >= 0
            assert (r["kd_loss_per_image"] == 0) == (method == "mt" or r["lpl_per_image"] == 0)
            assert 0 <= r["lpl_mean_weight"] <= 2  # 1 - cos
            assert after > before + 0.08, (method, seed, before, after)


def test_hpl_thresh_auto_is_the_source_models_best_f1_on_valid_and_survives_resume(shifted_domain, tmp_path,
                                                                                   monkeypatch, capsys):
    import darknet_kd.train.adapt as adapt_mod

    cfg, weights, target = shifted_domain
    r = evaluate(load(cfg, weights), read_data_file(target), workers=0, progress=False).darknet
    assert 0.0 < r.best_thresh < 1.0 and r.best_f1 > 0
    a = AdaptOptions(method="mt", epochs=1, hpl_auto=True)
    t = AdaptTrainer(target, cfg, weights, _topts(backup=str(tmp_path / "b"), save_every=1, max_batches=2), a)
    chosen = t.adapt.lpld.hpl_thresh
    assert chosen == pytest.approx(r.best_thresh, rel=1e-5)  # the trainer's own pass (float noise apart)
    assert chosen < t.hpl_choice["f1_score_at"]  # just below that score: HPL keep scores > thresh
    assert "best F1" in capsys.readouterr().out
    summary = t.run()
    assert summary["hpl_thresh"] == chosen and summary["hpl_choice"]["f1"] == pytest.approx(r.best_f1)

    def no_second_pass(*_, **__):
        raise AssertionError("--resume must reuse the threshold chosen on the source model")

    monkeypatch.setattr(adapt_mod, "select_hpl_threshold", no_second_pass)
    t2 = AdaptTrainer(target, cfg, weights, _topts(backup=str(tmp_path / "b"), resume=True, max_batches=3),
                      AdaptOptions(method="mt", epochs=1, hpl_auto=True))
    assert t2.adapt.lpld.hpl_thresh == chosen
    # without a labelled valid= list: a clear error naming the .data file
    bare = _unlabelled_target(tmp_path / "bare", n=4)
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"target\.data.*needs a labelled valid= list"):
        AdaptTrainer(bare, cfg, weights, _topts(), AdaptOptions(method="mt", hpl_auto=True))
    from darknet_kd.cli import main

    with pytest.raises(SystemExit) as e:  # argparse's usage error
        main(["adapt", str(bare), str(cfg), str(weights), "--hpl-thresh", "often", "--quiet"])
    assert e.value.code == 2
    assert "not a number or 'auto'" in capsys.readouterr().err


def test_audit_counts_objects_recovered_by_lpl_only(tmp_path, monkeypatch, tiny_model):
    import darknet_kd.loss.lpld as lpld_mod
    from darknet_kd.train.adapt import audit_pseudo_labels

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((96, 96, 3), 120, np.uint8))
    truths = [np.array([[0, 0.25, 0.25, 0.2, 0.2], [1, 0.7, 0.3, 0.2, 0.2], [0, 0.5, 0.75, 0.2, 0.2]], np.float32)]
    A, Bx, C = [0.25, 0.25, 0.2, 0.2], [0.7, 0.3, 0.2, 0.2], [0.5, 0.75, 0.2, 0.2]
    fake = {"hpl": (torch.tensor([A, Bx]), torch.tensor([0, 0])),                   # A hit; B: wrong class
            "lpl": (torch.tensor([Bx, C, [0.9, 0.9, 0.1, 0.1], A]), torch.tensor([1, 1, 0, 0])),
            # slots: A at 0.5, B at 0.05, C shifted off (IoU < 0.5) at 0.9, a far box at 0.9
            "rows": (torch.tensor([A, Bx, [0.5, 0.95, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]),
                     torch.tensor([0.5, 0.05, 0.9, 0.9]))}
    monkeypatch.setattr(lpld_mod, "teacher_pseudo_labels", lambda model, x, opts: [fake] * x.shape[0])
    r = audit_pseudo_labels(tiny_model, [img], truths, progress=False)
    assert (r["truths"], r["hpl"], r["hpl_hits"], r["truths_hpl"]) == (3, 2, 1, 1)
    assert (r["lpl"], r["lpl_hits"], r["recovered"]) == (4, 2, 1)
    assert r["recovered_share"] == 0.5 and r["hpl_recall"] == pytest.approx(1 / 3)
    assert r["seen"] == {"0.01": pytest.approx(2 / 3), "0.1": pytest.approx(1 / 3)}


def test_adapt_cli_sets_the_lpl_objectness_floor(capsys):
    """--lpl-min-obj M sets the class-relation filter's background bound to 1 - M; absent, it stays the
    published 0.99; outside [0, 1) it is a usage error."""
    import argparse

    from darknet_kd.train.adapt import add_parser, adapt_options_from_args

    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    base = ["adapt", "t.data", "x.cfg", "w.weights"]
    assert adapt_options_from_args(p.parse_args(base)).lpld.bg_max == LpldOptions().bg_max == 0.99
    assert adapt_options_from_args(p.parse_args(base + ["--lpl-min-obj", "0.2"])).lpld.bg_max == pytest.approx(0.8)
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--lpl-min-obj", "1.5"])
    assert "must be in [0, 1)" in capsys.readouterr().err
