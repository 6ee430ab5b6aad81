"""Distillation losses (darknet_kd/loss/{fitnet,fgd,ld,crosskd}.py): hand-computed values,
zero when the student equals the teacher, gradients only where they belong, masks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from darknet_kd.model import Darknet
from darknet_kd.loss.crosskd import CrossKDLoss, crosskd_head_loss, renormalize, teacher_head_chain
from darknet_kd.loss.fgd import FGDLoss, GcBlock, attention, fgd_level, fgd_masks
from darknet_kd.loss.fitnet import Adapter, FitNetLoss
from darknet_kd.loss.ld import LDLoss, dfl_loss, edge_distances, yolo_positives

from synthetic import tiny_cfg


def _identity_adapter(a: Adapter, c: int):
    with torch.no_grad():
        a.conv.weight.copy_(torch.eye(c).view(c, c, 1, 1))
    a.bn.eps = 0.0
    a.eval()


# ------------------------------------------------------------------------------------ FitNets
def test_fitnet_hand_value_and_zero():
    loss = FitNetLoss([1], [2], weight=3.0)
    a = loss.adapters[0]
    with torch.no_grad():
        a.conv.weight.copy_(torch.tensor([[[[2.0]]], [[[-1.0]]]]))
    a.bn.eps = 0.0
    a.eval()
    s = torch.tensor([[[[1.0, 2.0]]]])                     # (1, 1, 1, 2)
    t = torch.tensor([[[[0.0, 4.0]], [[-1.0, 0.0]]]])      # (1, 2, 1, 2)
    # r(s) = [[2, 4], [-1, -2]]; squared errors 4, 0, 0, 4 -> mean 2, times 3
    value, parts = loss([s], [t])
    assert value.item() == pytest.approx(6.0)
    assert parts["hint"].item() == pytest.approx(6.0)
    same = FitNetLoss([2], [2])
    _identity_adapter(same.adapters[0], 2)
    assert same([t], [t.clone()])[0].item() == 0.0


def test_fitnet_sums_images_and_grads_only_to_student():
    torch.manual_seed(0)
    loss = FitNetLoss([3], [4])
    s = torch.randn(2, 3, 5, 5, requires_grad=True)
    t = torch.randn(2, 4, 5, 5, requires_grad=True)
    loss.eval()
    both = loss([s], [t])[0]
    one = loss([s[:1]], [t[:1]])[0] + loss([s[1:]], [t[1:]])[0]
    assert both.item() == pytest.approx(one.item(), rel=1e-5)      # a sum over images, not a mean
    both.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert all(p.grad is not None for p in loss.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------ FGD
def test_fgd_masks_hand_case():
    # one box covering x, y in [0.25, 0.75] on a 4x4 grid: rows/cols floor(1)..ceil(3) -> 3x3, value 1/9
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    fg, bg = fgd_masks(t, 2, 4, 4)
    want = torch.zeros(4, 4)
    want[1:4, 1:4] = 1 / 9
    assert torch.allclose(fg[0], want)
    assert torch.allclose(bg[0], (want == 0).float() / 7)
    assert fg[1].sum() == 0 and torch.allclose(bg[1], torch.full((4, 4), 1 / 16))   # image without boxes
    # a small box inside the big one keeps the larger value (the smaller box's)
    t2 = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5], [0, 1, 0.3, 0.3, 0.1, 0.1]])
    fg2, _ = fgd_masks(t2, 1, 4, 4)
    # small box: x 1.0..1.4 -> cols 1..2, rows 1..2 -> 1/4 where it overlaps, 1/9 elsewhere in the big box
    assert fg2[0, 1, 1].item() == pytest.approx(1 / 4) and fg2[0, 3, 3].item() == pytest.approx(1 / 9)


def test_fgd_attention_and_level_hand_case():
    f = torch.full((1, 2, 3, 3), 2.0)
    sp, ch = attention(f)
    assert torch.allclose(sp, torch.ones(1, 3, 3)) and torch.allclose(ch, torch.ones(1, 2))
    s = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[[1.0, 3.0]]]])
    fg = torch.tensor([[[1.0, 0.0]]])
    bg = torch.tensor([[[0.0, 1.0]]])
    e = torch.softmax(torch.tensor([1.0, 3.0]) / 0.5, 0) * 2            # teacher spatial attention
    l_fg, l_bg, l_mask = fgd_level(s, t, fg, bg)
    assert l_fg.item() == pytest.approx(e[0].item() * 1.0)
    assert l_bg.item() == pytest.approx(e[1].item() * 9.0)
    # student attention: uniform (1, 1); channel attention 1 on both sides
    assert l_mask.item() == pytest.approx((e - 1).abs().sum().item(), rel=1e-6)


def test_fgd_zero_when_equal_and_gradients():
    torch.manual_seed(1)
    loss = FGDLoss([6], [6])
    f = torch.randn(2, 6, 4, 4)
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.4]])
    value, parts = loss([f], [f.clone()], targets=t)
    assert value.item() == pytest.approx(0.0, abs=1e-7)      # GcBlocks start as identity (last conv zero)
    loss2 = FGDLoss([3], [6])                                  # widths differ: an align conv
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    tt = torch.randn(2, 6, 4, 4, requires_grad=True)
    value, parts = loss2([s], [tt], targets=t)
    assert set(parts) == {"fg", "bg", "mask", "global"} and value.item() > 0
    value.backward()
    assert s.grad.abs().sum() > 0 and tt.grad is None
    assert loss2.align[0].conv.weight.grad.abs().sum() > 0


def test_gcblock_is_identity_at_init():
    g = GcBlock(8)
    x = torch.randn(2, 8, 5, 3)
    assert torch.equal(g(x), x)


# ------------------------------------------------------------------------------------ LD
def test_dfl_and_edges_hand_case():
    logits = torch.zeros(1, 4, 17)
    assert dfl_loss(logits, torch.full((1, 4), 2.3)).item() == pytest.approx(math.log(17), rel=1e-6)
    logits = torch.full((1, 4, 17), -30.0)
    logits[..., 2], logits[..., 3] = 0.0, 0.0                   # half on bin 2, half on bin 3
    d = torch.tensor([[2.3, 2.3, 2.5, 2.0]])
    want = math.log(2)                                          # CE of bins 2 and 3 is log 2 each
    assert dfl_loss(logits, d).item() == pytest.approx(want, rel=1e-4)
    # box x 0.25..0.75, y 0.125..0.375 on an 8x8 grid, responsible cell (row 2, col 4): centre (4.5, 2.5)
    box = torch.tensor([[0.5, 0.25, 0.5, 0.25]])
    e = edge_distances(box, torch.tensor([2]), torch.tensor([4]), 8, 8, reg_max=16)
    assert torch.allclose(e, torch.tensor([[2.5, 1.5, 1.5, 0.5]]))
    assert edge_distances(torch.tensor([[0.5, 0.5, 1.0, 1.0]]), torch.tensor([3]), torch.tensor([3]), 64, 64,
                          reg_max=16).max().item() == pytest.approx(15.99)


def test_yolo_positives_follow_darknet(tmp_path):
    model = Darknet.from_cfg(tiny_cfg(tmp_path))            # anchors 12x12, 20x30, 30x20 at 96x96, mask 0,1,2
    y = model.yolo_layers[0]
    t = torch.tensor([[1, 0, 0.51, 0.26, 20 / 96, 30 / 96], [0, 1, 0.1, 0.9, 31 / 96, 19 / 96]])
    b, a, row, col, idx = yolo_positives(y, t, 6, 6, (96, 96))
    assert b.tolist() == [1, 0] and a.tolist() == [1, 2] and idx.tolist() == [0, 1]
    assert row.tolist() == [1, 5] and col.tolist() == [3, 0]


def _ld_setup(tmp_path, same=True):
    torch.manual_seed(0)
    model = Darknet.from_cfg(tiny_cfg(tmp_path))
    y = model.yolo_layers[0]
    levels = [{"s_layer": y, "s_head": 0, "t_layer": y, "t_head": 0}]
    loss = LDLoss([32], [32], levels)
    if same:
        loss.t_dist.load_state_dict(loss.s_dist.state_dict())
    feat = torch.randn(2, 32, 6, 6)
    head = torch.randn(2, 21, 6, 6)
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 1, 0.2, 0.7, 0.2, 0.3]])
    return loss, feat, head, t


def test_ld_zero_when_student_equals_teacher(tmp_path):
    loss, feat, head, t = _ld_setup(tmp_path)
    value, parts = loss(s_feats=[feat], t_feats=[feat.clone()], s_heads=[head], t_heads=[head.clone()],
                        targets=t, net_hw=(96, 96))
    assert parts["ld"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["cls_kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["dfl"].item() > 0                       # the student branch's own ground-truth loss


def test_ld_value_matches_reference_and_grads(tmp_path):
    loss, feat, head, t = _ld_setup(tmp_path, same=False)
    with torch.no_grad():      # distributions far apart (the float32 kernel's KL is exact to ~1e-3 near 0)
        loss.t_dist[0].conv.weight.mul_(100)
    s_feat = feat.clone().requires_grad_(True)
    t_feat = (feat + 0.5 * torch.randn_like(feat)).requires_grad_(True)
    s_head = head.clone().requires_grad_(True)
    t_head = torch.randn_like(head).requires_grad_(True)
    value, parts = loss(s_feats=[s_feat], t_feats=[t_feat], s_heads=[s_head], t_heads=[t_head], targets=t,
                        net_hw=(96, 96))
    # reference in plain torch: positives (image 0: cell 3,3 anchor ?; image 1: ...) from yolo_positives
    y = loss.levels[0]["s_layer"]
    b, a, row, col, idx = yolo_positives(y, t, 6, 6, (96, 96))
    sb = loss.s_dist[0](s_feat).detach()[b, a, :, :, row, col]            # (P, 4, 17)
    tb = loss.t_dist[0](t_feat).detach()[b, a, :, :, row, col]
    sr = s_head.detach().view(2, 3, 7, 6, 6)[b, a, :, row, col]
    tr = t_head.detach().view(2, 3, 7, 6, 6)[b, a, :, row, col]
    score = torch.sigmoid(sr[:, 4]) * torch.sigmoid(sr[:, 5:]).max(1).values
    T = 10.0
    kl = (F.softmax(tb / T, -1) * (F.log_softmax(tb / T, -1) - F.log_softmax(sb / T, -1))).sum(-1)  # (P, 4)
    ld_ref = 0.25 * (T * T * kl.mean(-1) / 17 * score).sum()
    Tc = 2.0
    klc = (F.softmax(tr[:, 5:] / Tc, -1) * (F.log_softmax(tr[:, 5:] / Tc, -1)
                                             - F.log_softmax(sr[:, 5:] / Tc, -1))).sum(-1)
    cls_ref = 10.0 * (Tc * Tc * klc / 2).sum()
    assert parts["ld"].item() == pytest.approx(ld_ref.item(), rel=1e-4)
    assert parts["cls_kd"].item() == pytest.approx(cls_ref.item(), rel=1e-4)
    value.backward()
    assert s_feat.grad.abs().sum() > 0 and s_head.grad.abs().sum() > 0
    assert t_feat.grad is None and t_head.grad is None
    assert all(p.grad is None for p in loss.t_dist.parameters())          # the teacher branch is fitted apart
    assert all(p.grad is not None for p in loss.student_parameters())
    # only the responsible cells/anchors get a head gradient
    g = s_head.grad.view(2, 3, 7, 6, 6).abs().sum(2)
    hot = torch.zeros_like(g, dtype=torch.bool)
    hot[b, a, row, col] = True
    assert g[~hot].sum() == 0 and (g[hot] > 0).all()


def test_ld_teacher_fit_trains_only_teacher_branch(tmp_path):
    loss, feat, head, t = _ld_setup(tmp_path, same=False)
    tf = feat.clone().requires_grad_(True)
    v = loss.teacher_fit_loss([tf], t, (96, 96))
    v.backward()
    assert tf.grad is None
    assert all(p.grad is not None for p in loss.t_dist.parameters())
    assert all(p.grad is None for p in loss.s_dist.parameters())


# ------------------------------------------------------------------------------------ CrossKD
def test_renormalize_gives_teacher_statistics():
    torch.manual_seed(0)
    s = torch.randn(4, 3, 5, 5) * 7 + 2
    scale, shift = torch.tensor([0.5, 2.0, 3.0]).view(1, 3, 1, 1), torch.tensor([1.0, -1, 0]).view(1, 3, 1, 1)
    t = torch.randn(4, 3, 5, 5) * scale + shift
    r = renormalize(s, t)
    assert torch.allclose(r.mean((0, 2, 3)), t.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(r.std((0, 2, 3)), t.std((0, 2, 3)), atol=1e-4)
    assert torch.allclose(renormalize(t, t), t, atol=1e-5)


def _qfl(s, t):
    p = torch.sigmoid(t)
    return F.binary_cross_entropy_with_logits(s, p, reduction="none") * (torch.sigmoid(s) - p).abs()


def test_crosskd_head_loss_hand_case(tmp_path):
    model = Darknet.from_cfg(tiny_cfg(tmp_path))
    y = model.yolo_layers[0]                                   # 3 anchors, 2 classes
    torch.manual_seed(0)
    s = torch.randn(1, 21, 2, 2)
    t = torch.randn(1, 21, 2, 2)
    out = crosskd_head_loss(s, t, y)
    sv, tv = s.view(1, 3, 7, 2, 2), t.view(1, 3, 7, 2, 2)
    p = torch.sigmoid(tv[:, :, 4])
    assert out["obj"].item() == pytest.approx(_qfl(sv[:, :, 4], tv[:, :, 4]).sum().item(), rel=1e-5)
    assert out["cls"].item() == pytest.approx((_qfl(sv[:, :, 5:], tv[:, :, 5:]) * p[:, :, None]).sum().item(), rel=1e-5)
    assert out["xy"].item() == pytest.approx((_qfl(sv[:, :, :2], tv[:, :, :2]) * p[:, :, None]).sum().item(), rel=1e-5)
    assert out["wh"].item() == pytest.approx((2 * p[:, :, None] * (sv[:, :, 2:4] - tv[:, :, 2:4]) ** 2).sum().item(),
                                             rel=1e-5)
    zero = crosskd_head_loss(t, t.clone(), y)
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in zero.values())


def test_crosskd_through_frozen_teacher_head(tmp_path):
    torch.manual_seed(0)
    teacher = Darknet.from_cfg(tiny_cfg(tmp_path)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    y = teacher.yolo_layers[0]
    levels = [{"t_layer": y, "t_head": 0, "chain": teacher_head_chain(teacher, y.index - 2, y)}]
    loss = CrossKDLoss([32], [32], levels)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        heads, feats = teacher(x, keep=[5], raw=True)    # layer 5: the input of the head conv
    # student == teacher: the cross-head reproduces the teacher's head, the loss is ~0
    value, _ = loss(s_feats=[feats[5]], t_feats=[feats[5]], t_heads=heads)
    assert value.item() == pytest.approx(0.0, abs=1e-3)
    s = (feats[5] * 1.3 + 0.2 * torch.randn_like(feats[5])).requires_grad_(True)
    value, parts = loss(s_feats=[s], t_feats=[feats[5]], t_heads=heads)
    assert value.item() > 0.01
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert list(loss.parameters()) == []                     # equal widths: no align conv, nothing registered
    with pytest.raises(Exception, match="lies between hook layer"):
        teacher_head_chain(teacher, 2, y)
