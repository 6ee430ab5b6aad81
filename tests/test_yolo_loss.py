"""Darknet's [yolo] loss: assignment, ignore_thresh, gradient == Darknet's delta (against a
loop-by-loop Python port of src/yolo_layer.c:process_batch and src/box.c:dx_box_iou), finite
gradients, bad targets, and a small model that overfits 4 images."""
import math
import re
import textwrap

import numpy as np
import pytest
import torch

from darknet_kd import box
from darknet_kd.errors import DarknetKDError
from darknet_kd.eval import compute_map
from darknet_kd.loss import YoloLoss
from darknet_kd.loss.yolo import class_multipliers
from darknet_kd.model import Darknet

NET = 64


def make_model(tmp_path, yolo_opts="", classes=3, head2=True, name="t.cfg"):
    """64x64 input, an 8x8 head (anchors 0-2) and optionally a 4x4 head (anchors 3-5)."""
    f = (5 + classes) * 3
    yolo = textwrap.dedent(f"""
        [yolo]
        classes={classes}
        num=6
        anchors=8,8, 16,16, 24,40, 40,24, 48,48, 64,64
        {{mask}}
        """) + "\n".join(o.strip() for o in yolo_opts.strip().splitlines()) + "\n"
    cfg = textwrap.dedent(f"""
        [net]
        width={NET}
        height={NET}
        channels=3
        [convolutional]
        filters=4
        size=3
        stride=8
        pad=1
        activation=leaky
        [convolutional]
        filters={f}
        size=1
        stride=1
        activation=linear
        """) + yolo.replace("{mask}", "mask=0,1,2")
    if head2:
        cfg += textwrap.dedent(f"""
            [route]
            layers=-3
            [convolutional]
            filters={f}
            size=3
            stride=2
            pad=1
            activation=linear
            """) + yolo.replace("{mask}", "mask=3,4,5")
    p = tmp_path / name
    p.write_text(cfg)
    return Darknet.from_cfg(p)


def head_shapes(model, batch):
    out = []
    for y in model.yolo_layers:
        out.append((batch, y.in_shape.c, y.in_shape.h, y.in_shape.w))
    return out


# ------------------------------------------------------------------------------------------------
# Python reference: process_batch / delta_yolo_box / delta_yolo_class / dx_box_iou, scalar, float64.
# ------------------------------------------------------------------------------------------------
def _inter_union(a, b):
    def ov(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = ov(a[0], a[2], b[0], b[2]), ov(a[1], a[3], b[1], b[3])
    i = 0.0 if (w < 0 or h < 0) else w * h
    return i, a[2] * a[3] + b[2] * b[3] - i


def _iou(a, b):
    i, u = _inter_union(a, b)
    return 0.0 if (i == 0 or u == 0) else i / u


def _iou_kind(a, b, kind):
    """box.c:box_iou_kind (box_iou, box_giou, box_diou, box_ciou)."""
    i = _iou(a, b)
    top, bot = min(a[1] - a[3] / 2, b[1] - b[3] / 2), max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left, right = min(a[0] - a[2] / 2, b[0] - b[2] / 2), max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    w, h = right - left, bot - top
    if kind == "iou":
        return i
    if kind == "giou":
        c = w * h
        if c == 0:
            return i
        return i - (c - _inter_union(a, b)[1]) / c
    c = w * w + h * h
    if c == 0:
        return i
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    if kind == "diou":
        return i - (d / c) ** 0.6
    ar = 4 / math.pi ** 2 * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
    return i - (d / c + ar / (1 - i + ar + 0.000001) * ar)


def ref_dx_box_iou(pred, truth, kind):
    px, py, pw, ph = pred
    tx, ty, tw, th = truth
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pred_t, pred_b, pred_l, pred_r = min(top, bot), max(top, bot), min(left, right), max(left, right)
    t_t, t_b, t_l, t_r = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_b - t_t) * (t_r - t_l)
    Ih = min(pred_b, t_b) - max(pred_t, t_t)
    Iw = min(pred_r, t_r) - max(pred_l, t_l)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    giou_Cw = max(pred_r, t_r) - min(pred_l, t_l)
    giou_Ch = max(pred_b, t_b) - min(pred_t, t_t)
    giou_C = giou_Cw * giou_Ch
    dX_t, dX_b, dX_l, dX_r = -(pred_r - pred_l), pred_r - pred_l, -(pred_b - pred_t), pred_b - pred_t
    dI_t = -Iw if pred_t > t_t else 0
    dI_b = Iw if pred_b < t_b else 0
    dI_l = -Ih if pred_l > t_l else 0
    dI_r = Ih if pred_r < t_r else 0
    dU_t, dU_b, dU_l, dU_r = dX_t - dI_t, dX_b - dI_b, dX_l - dI_l, dX_r - dI_r
    dC_t = -giou_Cw if pred_t < t_t else 0
    dC_b = giou_Cw if pred_b > t_b else 0
    dC_l = -giou_Ch if pred_l < t_l else 0
    dC_r = giou_Ch if pred_r > t_r else 0
    p_dt = p_db = p_dl = p_dr = 0
    if U > 0:
        p_dt = (U * dI_t - I * dU_t) / (U * U)
        p_db = (U * dI_b - I * dU_b) / (U * U)
        p_dl = (U * dI_l - I * dU_l) / (U * U)
        p_dr = (U * dI_r - I * dU_r) / (U * U)
    p_dt = p_dt if top < bot else p_db
    p_db = p_db if top < bot else p_dt
    p_dl = p_dl if left < right else p_dr
    p_dr = p_dr if left < right else p_dl
    if kind == "giou":
        if giou_C > 0:
            p_dt += (giou_C * dU_t - U * dC_t) / (giou_C * giou_C)
            p_db += (giou_C * dU_b - U * dC_b) / (giou_C * giou_C)
            p_dl += (giou_C * dU_l - U * dC_l) / (giou_C * giou_C)
            p_dr += (giou_C * dU_r - U * dC_r) / (giou_C * giou_C)
        if Iw <= 0 or Ih <= 0:
            p_dt = (giou_C * dU_t - U * dC_t) / (giou_C * giou_C)
            p_db = (giou_C * dU_b - U * dC_b) / (giou_C * giou_C)
            p_dl = (giou_C * dU_l - U * dC_l) / (giou_C * giou_C)
            p_dr = (giou_C * dU_r - U * dC_r) / (giou_C * giou_C)
    Ct, Cb = min(py - ph / 2, ty - th / 2), max(py + ph / 2, ty + th / 2)
    Cl, Cr = min(px - pw / 2, tx - tw / 2), max(px + pw / 2, tx + tw / 2)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    dCt_dy, dCt_dh = (1, -0.5) if pred_t < t_t else (0, 0)
    dCb_dy, dCb_dh = (1, 0.5) if pred_b > t_b else (0, 0)
    dCl_dx, dCl_dw = (1, -0.5) if pred_l < t_l else (0, 0)
    dCr_dx, dCr_dw = (1, 0.5) if pred_r > t_r else (0, 0)
    dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
    dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
    p_dx, p_dy, p_dw, p_dh = p_dl + p_dr, p_dt + p_db, p_dr - p_dl, p_db - p_dt
    if kind in ("diou", "ciou"):
        ar_w = ar_h = 0.0
        if kind == "ciou":
            diff = math.atan(tw / th) - math.atan(pw / ph)
            ar_loss = 4 / (math.pi * math.pi) * diff * diff
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            ar_w, ar_h = alpha * 8 / (math.pi * math.pi) * diff * ph, alpha * -8 / (math.pi * math.pi) * diff * pw
        ddx = (2 * (tx - px) * C - (2 * Cw * dCw_dx) * S) / (C * C)
        ddy = (2 * (ty - py) * C - (2 * Ch * dCh_dy) * S) / (C * C)
        ddw = (2 * Cw * dCw_dw) * S / (C * C) + ar_w
        ddh = (2 * Ch * dCh_dh) * S / (C * C) + ar_h
        if C > 0:
            p_dx, p_dy, p_dw, p_dh = p_dx + ddx, p_dy + ddy, p_dw + ddw, p_dh + ddh
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = ddx, ddy, ddw, ddh
    return p_dx, p_dy, p_dw, p_dh


def ref_layer_delta(layer, out, truths, net_w, net_h):
    """out: l.output as float64 array (B, A, 5+C, H, W), already activated like forward_yolo_layer;
    truths: per image a list of (x, y, w, h, class).  Returns l.delta, same shape."""
    nb, A, _, lh, lw = out.shape
    C = layer.classes
    delta = np.zeros_like(out)
    biases = [v for a in layer.anchors for v in a]
    mult = class_multipliers(layer)
    eps = layer.label_smooth_eps

    def get_box(b, a, n, i, j):
        o = out[b, a, :, j, i]
        if layer.new_coords:
            return ((i + o[0]) / lw, (j + o[1]) / lh, o[2] * o[2] * 4 * biases[2 * n] / net_w,
                    o[3] * o[3] * 4 * biases[2 * n + 1] / net_h)
        return ((i + o[0]) / lw, (j + o[1]) / lh, math.exp(o[2]) * biases[2 * n] / net_w,
                math.exp(o[3]) * biases[2 * n + 1] / net_h)

    def delta_box(truth, b, a, n, i, j, scale, iou_norm):
        o, d = out[b, a, :, j, i], delta[b, a, :, j, i]
        pred = list(get_box(b, a, n, i, j))
        if pred[2] == 0:
            pred[2] = 1.0
        if pred[3] == 0:
            pred[3] = 1.0
        if layer.iou_loss == "mse":
            tx, ty = truth[0] * lw - i, truth[1] * lh - j
            if layer.new_coords:
                tw = math.sqrt(truth[2] * net_w / (4 * biases[2 * n]))
                th = math.sqrt(truth[3] * net_h / (4 * biases[2 * n + 1]))
            else:
                tw, th = math.log(truth[2] * net_w / biases[2 * n]), math.log(truth[3] * net_h / biases[2 * n + 1])
            for k, t in enumerate((tx, ty, tw, th)):
                d[k] += scale * (t - o[k]) * iou_norm
            return
        dx, dy, dw, dh = ref_dx_box_iou(pred, truth[:4], layer.iou_loss)
        if not layer.new_coords:
            dw *= math.exp(o[2])
            dh *= math.exp(o[3])
        for k, v in enumerate((dx, dy, dw, dh)):
            v *= iou_norm
            if math.isnan(v) or math.isinf(v):
                v = 0.0
            if math.isfinite(layer.max_delta):
                v = max(-layer.max_delta, min(layer.max_delta, v))
            d[k] += v

    def delta_class(b, a, i, j, cid):
        o, d = out[b, a, 5:, j, i], delta[b, a, 5:, j, i]
        if d[cid]:
            y = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
            d[cid] = y - o[cid]
            if mult:
                d[cid] *= mult[cid]
            return
        for c in range(C):
            y = 1.0 if c == cid else 0.0
            if eps:
                y = y * (1 - eps) + 0.5 * eps
            d[c] = y - o[c]
            if mult and c == cid:
                d[c] *= mult[cid] * layer.cls_normalizer

    for b in range(nb):
        tr = truths[b][:layer.max_boxes]
        for j in range(lh):
            for i in range(lw):
                for a in range(A):
                    pred = get_box(b, a, layer.mask[a], i, j)
                    best_match_iou, best_iou, best_t = 0.0, 0.0, 0
                    for t, truth in enumerate(tr):
                        match = any(out[b, a, 5 + c, j, i] > 0.25 for c in range(C))
                        iou = _iou(pred, truth[:4])
                        if iou > best_match_iou and match:
                            best_match_iou = iou
                        if iou > best_iou:
                            best_iou, best_t = iou, t
                    p = out[b, a, 4, j, i]
                    delta[b, a, 4, j, i] = layer.obj_normalizer * (0 - p)
                    if best_match_iou > layer.ignore_thresh:
                        if layer.objectness_smooth:
                            d = layer.obj_normalizer * (best_match_iou - p)
                            if d > delta[b, a, 4, j, i]:
                                delta[b, a, 4, j, i] = d
                        else:
                            delta[b, a, 4, j, i] = 0
                    if best_iou > layer.truth_thresh:
                        iou_mult = best_iou * best_iou
                        delta[b, a, 4, j, i] = layer.obj_normalizer * ((iou_mult if layer.objectness_smooth else 1) - p)
                        cid = tr[best_t][4]
                        delta_class(b, a, i, j, cid)
                        cm = mult[cid] if mult else 1.0
                        if layer.objectness_smooth:
                            delta[b, a, 5 + cid, j, i] = cm * (iou_mult - out[b, a, 5 + cid, j, i])
                        delta_box(tr[best_t], b, a, layer.mask[a], i, j, 2 - tr[best_t][2] * tr[best_t][3],
                                  layer.iou_normalizer * cm)
        for t, truth in enumerate(tr):
            cid = truth[4]
            i, j = int(truth[0] * lw), int(truth[1] * lh)
            best_iou, best_n = 0.0, 0
            for n in range(len(layer.anchors)):
                iou = _iou((0, 0, biases[2 * n] / net_w, biases[2 * n + 1] / net_h), (0, 0, truth[2], truth[3]))
                if iou > best_iou:
                    best_iou, best_n = iou, n
            ns = [best_n]
            if layer.iou_thresh < 1:
                ns += [n for n in range(len(layer.anchors)) if n != best_n and _iou_kind(
                    (0, 0, biases[2 * n] / net_w, biases[2 * n + 1] / net_h), (0, 0, truth[2], truth[3]),
                    layer.iou_thresh_kind) > layer.iou_thresh]
            for n in ns:
                if n not in layer.mask:
                    continue
                a = layer.mask.index(n)
                cm = mult[cid] if mult else 1.0
                delta_box(truth, b, a, n, i, j, 2 - truth[2] * truth[3], layer.iou_normalizer * cm)
                d_obj = cm * layer.obj_normalizer * (1 - out[b, a, 4, j, i])
                if layer.objectness_smooth:
                    if delta[b, a, 4, j, i] == 0:
                        delta[b, a, 4, j, i] = d_obj
                else:
                    delta[b, a, 4, j, i] = d_obj
                delta_class(b, a, i, j, cid)
        if layer.iou_thresh < 1:
            for j in range(lh):
                for i in range(lw):
                    for a in range(A):
                        if delta[b, a, 4, j, i] != 0:
                            k = sum(1 for c in range(C) if delta[b, a, 5 + c, j, i] > 0)
                            if k > 0:
                                delta[b, a, :4, j, i] /= k
    return delta * layer.delta_normalizer


def activated(layer, head):
    """forward_yolo_layer's l.output from the raw head: (B, A, 5+C, H, W) float64."""
    nb, _, h, w = head.shape
    o = head.detach().double().view(nb, len(layer.mask), 5 + layer.classes, h, w).clone()
    if not layer.new_coords:
        o[:, :, :2] = torch.sigmoid(o[:, :, :2])
        o[:, :, 4:] = torch.sigmoid(o[:, :, 4:])
    s = layer.scale_x_y
    o[:, :, :2] = o[:, :, :2] * s - 0.5 * (s - 1)
    return o.numpy()


# Truths (x, y, w, h, class) of two images.  In image 0, truths 0, 1, 4 and 5 share a cell and
# best anchor (8x8 head, col 2, row 2) with classes 1, 2, 1, 2: box deltas add up, classes form
# a union, the last truth (class 2) sets the objectness weight.
TRUTHS = [
    [(0.30, 0.30, 0.25, 0.25, 1), (0.32, 0.28, 0.24, 0.26, 2), (0.70, 0.55, 0.70, 0.75, 0),
     (0.55, 0.80, 0.35, 0.60, 0), (0.31, 0.33, 0.26, 0.23, 1), (0.29, 0.31, 0.25, 0.24, 2)],
    [(0.50, 0.50, 0.13, 0.12, 2), (0.15, 0.85, 0.62, 0.40, 1)],
]


def targets_of(truths):
    return torch.tensor([[b, c, x, y, w, h] for b, img in enumerate(truths) for (x, y, w, h, c) in img],
                        dtype=torch.float32)


def random_heads(model, nb, seed, new_coords=False, truths=TRUTHS):
    """Raw heads whose boxes often overlap the truths (so ignore_thresh and class_id_match matter)."""
    g = torch.Generator().manual_seed(seed)
    heads = []
    for y, shp in zip(model.yolo_layers, head_shapes(model, nb)):
        h = torch.randn(shp, generator=g, dtype=torch.float64)
        v = h.view(nb, len(y.mask), 5 + y.classes, shp[2], shp[3])
        v[:, :, 2:4] *= 0.5
        if new_coords:
            h = torch.sigmoid(h)
        heads.append(h.float().requires_grad_())
    return heads


CASES = {
    "mse": "ignore_thresh=0.3",
    "mse_scale_xy": "scale_x_y=1.1\nignore_thresh=0.4\niou_normalizer=0.07\nobj_normalizer=1.5",
    "iou": "iou_loss=iou\nignore_thresh=0.3",
    "giou": "iou_loss=giou\nscale_x_y=1.05\nignore_thresh=0.3\nmax_delta=0.2",
    "diou": "iou_loss=diou\nignore_thresh=0.3\ndelta_normalizer=2",
    "ciou": "iou_loss=ciou\nscale_x_y=1.2\nignore_thresh=0.3\niou_normalizer=0.07",
    "iou_thresh": "iou_loss=ciou\niou_thresh=0.213\niou_thresh_kind=giou\nignore_thresh=0.3",
    "iou_thresh_mse": "iou_thresh=0.25\nignore_thresh=0.3",
    "counters": "counters_per_class=100,30,5\nmax_delta=10\ncls_normalizer=0.5\nlabel_smooth_eps=0.1\n"
                "ignore_thresh=0.3",
    "truth_thresh": "truth_thresh=0.4\nignore_thresh=0.25",
    "smooth": "objectness_smooth=1\ntruth_thresh=0.45\nignore_thresh=0.25",
    "new_coords_mse": "new_coords=1\nscale_x_y=2.0\nignore_thresh=0.3",
    "new_coords_ciou": "new_coords=1\niou_loss=ciou\nscale_x_y=2.0\nignore_thresh=0.3",
    "max_boxes": "max=3\nignore_thresh=0.3",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_is_darknet_delta(tmp_path, case):
    model = make_model(tmp_path, CASES[case])
    nc = model.yolo_layers[0].new_coords
    heads = random_heads(model, 2, seed=sorted(CASES).index(case), new_coords=bool(nc))
    loss, parts = YoloLoss(model)(heads, targets_of(TRUTHS), (NET, NET))
    loss.backward()
    touched = 0
    for y, h in zip(model.yolo_layers, heads):
        ref = ref_layer_delta(y, activated(y, h), [img for img in TRUTHS], NET, NET)
        got = -h.grad.double().view(ref.shape).numpy()
        assert np.allclose(got, ref, rtol=1e-4, atol=1e-5), (case, np.abs(got - ref).max())
        touched += np.count_nonzero(ref[:, :, :4])
    assert touched > 0
    assert torch.isfinite(loss) and parts["count"] > 0
    assert parts["total"] == pytest.approx(float(parts["box"] + parts["obj"] + parts["cls"]), rel=1e-5)


def test_reference_sees_ignores_and_collisions(tmp_path):
    """The delta test above is only meaningful if its data exercises ignore_thresh, the 0.25
    class match and the shared cell: check that on the "mse" case."""
    model = make_model(tmp_path, CASES["mse"])
    heads = random_heads(model, 2, seed=sorted(CASES).index("mse"))
    y = model.yolo_layers[0]
    out = activated(y, heads[0])
    ref = ref_layer_delta(y, out, TRUTHS, NET, NET)
    assert (ref[:, :, 4] == 0).sum() >= 2                         # ignored predictions
    assert np.count_nonzero(ref[0, 1, 5:, 2, 2] > 0) == 2          # classes 1 and 2 both positive


# ------------------------------------------------------------------------------------------------
def obj_grad_signs(model, truths, opts_batch=1):
    """Zero heads (every probability 0.5) and ignore_thresh=1: the slots with a negative
    objectness gradient are the positives."""
    heads = [torch.zeros(s, requires_grad=True) for s in head_shapes(model, opts_batch)]
    loss, parts = YoloLoss(model)(heads, targets_of(truths), (NET, NET))
    loss.backward()
    pos = []
    for li, (y, h) in enumerate(zip(model.yolo_layers, heads)):
        g = h.grad.view(opts_batch, len(y.mask), 5 + y.classes, h.shape[2], h.shape[3])
        for b, a, j, i in (g[:, :, 4] < 0).nonzero().tolist():
            pos.append((li, b, a, j, i))
    return sorted(pos), parts


def test_assignment_hand_built(tmp_path):
    model = make_model(tmp_path, "ignore_thresh=1.0")
    truths = [[
        (0.30, 0.70, 16 / 64, 16 / 64, 0),   # anchor 1 -> head 0 (8x8), mask index 1, col 2, row 5
        (0.90, 0.10, 46 / 64, 50 / 64, 1),   # anchor 4 -> head 1 (4x4), mask index 1, col 3, row 0
        (0.45, 0.45, 22 / 64, 42 / 64, 2),   # anchor 2 -> head 0, mask index 2, col 3, row 3
        (0.62, 0.38, 42 / 64, 26 / 64, 0),   # anchor 3 -> head 1, mask index 0, col 2, row 1
        (0.05, 0.99, 7 / 64, 9 / 64, 1),     # anchor 0 -> head 0, mask index 0, col 0, row 7
    ]]
    pos, parts = obj_grad_signs(model, truths)
    assert pos == sorted([(0, 0, 1, 5, 2), (1, 0, 1, 0, 3), (0, 0, 2, 3, 3), (1, 0, 0, 1, 2), (0, 0, 0, 7, 0)])
    assert parts["count"] == 5


def test_assignment_iou_thresh_adds_anchors(tmp_path):
    # Shape IoU with anchors 0..5: 0.16, 0.64 (best), 0.417, 0.417, 0.17, 0.10.
    truth = [[(0.30, 0.70, 20 / 64, 20 / 64, 0)]]
    pos, _ = obj_grad_signs(make_model(tmp_path, "ignore_thresh=1.0"), truth)
    assert pos == [(0, 0, 1, 5, 2)]
    pos, parts = obj_grad_signs(make_model(tmp_path, "ignore_thresh=1.0\niou_thresh=0.3", name="b.cfg"), truth)
    # anchors 2 (head 0) and 3 (head 1, 4x4 grid: col 1, row 2) join: each head adds its own.
    assert pos == [(0, 0, 1, 5, 2), (0, 0, 2, 5, 2), (1, 0, 0, 2, 1)]
    assert parts["count"] == 3


def test_assignment_best_anchor_on_other_layer_is_not_used(tmp_path):
    """Only the head whose mask holds the best anchor (over all anchors) learns the truth."""
    model = make_model(tmp_path, "ignore_thresh=1.0")
    heads = [torch.zeros(s, requires_grad=True) for s in head_shapes(model, 1)]
    crit = YoloLoss(model.yolo_layers[:1])                     # only the 8x8 head
    loss, parts = crit(heads[:1], targets_of([[(0.5, 0.5, 48 / 64, 48 / 64, 0)]]), (NET, NET))
    assert parts["count"] == 0 and parts["box"] == 0 and parts["cls"] == 0


def test_ignore_thresh(tmp_path):
    """A prediction that covers a truth gets no objectness gradient iff its IoU > ignore_thresh
    and some class probability > 0.25 (compare_yolo_class: any class)."""
    truth = [[(0.5625, 0.5625, 16 / 64, 16 / 64, 0)]]      # head 0, cell (4, 4), anchor 1

    def obj_grad(opts, cls_raw, name):
        model = make_model(tmp_path, opts, head2=False, name=name)
        y = model.yolo_layers[0]
        h = torch.zeros(head_shapes(model, 1)[0])
        h.view(1, 3, 8, 8, 8)[:, :, 5:] = cls_raw      # x = y = 0: boxes centred in their cells
        h.requires_grad_()
        YoloLoss([y])([h], targets_of(truth), (NET, NET))[0].backward()
        return h.grad.view(1, 3, 8, 8, 8)[0, :, 4]

    # anchor 0 (8x8) at cell (4,4): IoU(8x8 box, 16x16 truth) = 0.25
    g = obj_grad("ignore_thresh=0.2", 0.0, "a.cfg")          # class p = 0.5 > 0.25
    assert g[0, 4, 4] == 0                                   # IoU 0.25 > 0.2: ignored
    assert g[1, 4, 4] < 0                                    # the positive
    assert g[0, 0, 0] == pytest.approx(0.5)                  # far away: pushed to 0
    g = obj_grad("ignore_thresh=0.3", 0.0, "b.cfg")
    assert g[0, 4, 4] == pytest.approx(0.5)                  # IoU 0.25 <= 0.3: not ignored
    g = obj_grad("ignore_thresh=0.2", -3.0, "c.cfg")         # every class p = 0.047 < 0.25
    assert g[0, 4, 4] == pytest.approx(0.5)


def test_extra_ignore_drops_only_background_terms(tmp_path):
    """The ignore mask (the adaptation's ignore band) zeroes the no-object gradient of the
    masked slots; a masked slot that holds a truth keeps its positive terms; the rest and
    the loss's other parts are unchanged."""
    truth = [[(0.5625, 0.5625, 16 / 64, 16 / 64, 0)]]      # head 0, cell (4, 4), anchor 1
    model = make_model(tmp_path, "ignore_thresh=1.0", head2=False)
    y = model.yolo_layers[0]

    def grads(ignore):
        h = torch.zeros(head_shapes(model, 1)[0], requires_grad=True)
        loss, parts = YoloLoss([y])([h], targets_of(truth), (NET, NET), ignore=ignore)
        loss.backward()
        return h.grad.view(1, 3, 8, 8, 8)[0], parts

    g0, p0 = grads(None)
    mask = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    mask[0, 0, 2, 3] = mask[0, 2, 7, 7] = mask[0, 1, 4, 4] = True  # two background slots, the positive
    g1, p1 = grads([mask])
    assert g0[0, 4, 2, 3] == pytest.approx(0.5) and g1[0, 4, 2, 3] == 0
    assert g0[2, 4, 7, 7] == pytest.approx(0.5) and g1[2, 4, 7, 7] == 0
    assert torch.equal(g1[1, :, 4, 4], g0[1, :, 4, 4]) and g1[1, 4, 4, 4] < 0   # the positive stays
    keep = ~mask[0].unsqueeze(1).expand(3, 8, 8, 8).clone()
    keep[1, :, 4, 4] = True
    assert torch.equal(g1[keep], g0[keep])
    assert float(p1["box"]) == float(p0["box"]) and float(p1["cls"]) == float(p0["cls"])
    assert float(p1["obj"]) < float(p0["obj"])
    with pytest.raises(DarknetKDError, match="ignore must hold"):
        YoloLoss([y])([torch.zeros(head_shapes(model, 1)[0])], targets_of(truth), (NET, NET),
                      ignore=[torch.zeros(1, 3, 4, 4, dtype=torch.bool)])


@pytest.mark.parametrize("kind", ["mse", "iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("new_coords", [0, 1])
def test_gradients_finite(tmp_path, kind, new_coords):
    opts = f"iou_loss={kind}\nnew_coords={new_coords}\nscale_x_y=1.05\ncounters_per_class=10,1,3"
    model = make_model(tmp_path, opts)
    g = torch.Generator().manual_seed(3)
    heads = []
    for shp in head_shapes(model, 3):
        h = torch.randn(shp, generator=g) * 30                 # saturated logits, huge/zero boxes
        if new_coords:
            h = torch.sigmoid(h)
            h.view(3, 3, 8, *shp[2:])[:, :, 2:4] = 0.0           # zero-size predictions
        heads.append(h.requires_grad_())
    tiny = TRUTHS + [[(0.5, 0.5, 1e-4, 1e-4, 0), (0.999, 0.999, 1.0, 1.0, 2)]]
    loss, parts = YoloLoss(model)(heads, targets_of(tiny), (NET, NET))
    loss.backward()
    assert torch.isfinite(loss)
    for h in heads:
        assert torch.isfinite(h.grad).all()
    assert all(torch.isfinite(v) for v in parts.values())


def test_loss_scale_is_sum_over_images_and_zero_at_optimum(tmp_path):
    model = make_model(tmp_path, "")
    heads = random_heads(model, 2, seed=5)
    crit = YoloLoss(model)
    one = [h.detach()[:1] for h in heads]
    two = [torch.cat([h, h]) for h in one]
    t1 = targets_of(TRUTHS[:1])
    t2 = torch.cat([t1, t1 * torch.tensor([0, 1, 1, 1, 1, 1.0]) + torch.tensor([1.0, 0, 0, 0, 0, 0])])
    l1, _ = crit(one, t1, (NET, NET))
    l2, _ = crit(two, t2, (NET, NET))
    assert float(l2) == pytest.approx(2 * float(l1), rel=1e-5)
    # No truths: all predictions pushed to objectness 0; raw -> -inf drives the loss to 0.
    empty = torch.zeros(0, 6)
    low = [torch.full_like(h, -40.0) for h in one]
    l0, parts = crit(low, empty, (NET, NET))
    assert float(l0) == pytest.approx(0.0, abs=1e-6) and parts["count"] == 0


@pytest.mark.parametrize("bad, msg", [
    (torch.tensor([[0, 3, 0.5, 0.5, 0.1, 0.1]]), "row 0"),             # class 3 with classes=3
    (torch.tensor([[0, 0, 0.5, 0.5, 0.1, 0.1], [2, 0, 0.5, 0.5, 0.1, 0.1]]), "row 1"),  # image 2 of 2
    (torch.tensor([[0, 0, 1.5, 0.5, 0.1, 0.1]]), "row 0"),
    (torch.tensor([[0, 0, 0.5, 0.5, 0.0, 0.1]]), "row 0"),
    (torch.tensor([[0, 0, 0.5, float("nan"), 0.1, 0.1]]), "row 0"),
    (torch.zeros(2, 5), "(M, 6)"),
])
def test_bad_targets(tmp_path, bad, msg):
    model = make_model(tmp_path, "")
    heads = [torch.zeros(s) for s in head_shapes(model, 2)]
    with pytest.raises(DarknetKDError, match=re.escape(msg)):
        YoloLoss(model)(heads, bad, (NET, NET))



# ------------------------------------------------------------------------------------------------
# Overfit: a yolov4-tiny-like model (4 convs + 2 [yolo] heads at 128x128) learns 4 images.
# ------------------------------------------------------------------------------------------------
TINY = """
[net]
width=128
height=128
channels=3
{convs}
[convolutional]
filters=24
size=1
stride=1
activation=linear

[yolo]
mask=3,4,5
{yolo}

[route]
layers=-4

[convolutional]
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=24
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
{yolo}
"""
CONV = "\n[convolutional]\nfilters={}\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
YOLO_SETTINGS = {
    # [yolo] options of Darknet's yolov4-tiny.cfg and yolov3-tiny.cfg
    "yolov4-tiny": "scale_x_y=1.05\ncls_normalizer=1.0\niou_normalizer=0.07\niou_loss=ciou\nignore_thresh=.7\n"
                   "truth_thresh=1\nnms_kind=greedynms\nbeta_nms=0.6",
    "yolov3-tiny": "ignore_thresh=.7\ntruth_thresh=1",
}


def rectangles(seed=0):
    """4 images of coloured rectangles (class = colour) on noise, and their truths."""
    rng = np.random.default_rng(seed)
    colours = [(1, 0.1, 0.1), (0.1, 1, 0.1), (0.1, 0.1, 1)]
    ims, rows_all = [], []
    for b in range(4):
        im = rng.uniform(0, 0.6, (3, 128, 128)).astype(np.float32)
        rows = []
        for cls in rng.permutation(3)[:2 + b % 2]:
            while True:                                      # no overlap with earlier rectangles
                w, h = rng.integers(14, 70, 2)
                x0, y0 = rng.integers(0, 128 - w), rng.integers(0, 128 - h)
                r = [(x0 + w / 2) / 128, (y0 + h / 2) / 128, w / 128, h / 128]
                if all(_iou(r, q[1:]) == 0 for q in rows):
                    break
            im[:, y0:y0 + h, x0:x0 + w] = np.array(colours[cls], np.float32)[:, None, None]
            rows.append([int(cls), *r])
        ims.append(im)
        rows_all.append(np.array(rows))
    targets = torch.tensor([[b, *q] for b, rows in enumerate(rows_all) for q in rows], dtype=torch.float32)
    return torch.from_numpy(np.stack(ims)), targets, rows_all


def darknet_detections(out, thresh=0.005, nms=0.45):
    """get_yolo_detections (prob = obj·cls, zeroed at or below thresh) + do_nms_sort, per image."""
    dets = []
    for o in out:
        o = o[o[:, 4] > thresh]
        probs = o[:, 4:5] * o[:, 5:]
        probs = torch.where(probs > thresh, probs, torch.zeros_like(probs))
        for k in range(probs.shape[1]):
            order = torch.argsort(probs[:, k], descending=True, stable=True)
            ious = box.pairwise_iou(o[order, :4], o[order, :4])
            p = probs[order, k]
            for i in range(len(order)):
                if p[i] > 0:
                    p[i + 1:][ious[i, i + 1:] > nms] = 0
            probs[order, k] = p
        dets.append((o[:, :4].numpy(), probs.numpy()))
    return dets


@pytest.mark.parametrize("preset", sorted(YOLO_SETTINGS))
def test_overfit_four_images(tmp_path, preset):
    """Adam on (loss / batch), as the trainer scales it; mAP@0.5 (Darknet's, eval/voc_map)
    on the training images must reach 0.9 within 500 steps (~5-10 s on one core)."""
    anchors = "anchors=12,12, 20,28, 32,22, 44,44, 60,84, 90,64\nclasses=3\nnum=6\n" + YOLO_SETTINGS[preset]
    cfg = TINY.format(convs="".join(CONV.format(f) for f in (16, 32, 64, 64)), yolo=anchors)
    (tmp_path / "tiny.cfg").write_text(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Darknet.from_cfg(tmp_path / "tiny.cfg")
        x, targets, truths = rectangles()
        crit = YoloLoss(model)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        best, history = 0.0, []
        for step in range(1, 501):
            model.train()
            loss, parts = crit(model(x), targets)
            opt.zero_grad()
            (loss / len(x)).backward()
            opt.step()
            if step % 50 == 0:
                model.eval()
                with torch.no_grad():
                    dets = darknet_detections(model(x))
                best = compute_map(dets, truths, 3).map
                history.append((step, round(float(loss.detach()), 2), round(best, 3)))
                if best >= 0.9:
                    break
    finally:
        torch.set_num_threads(threads)
    print(preset, "(step, loss, mAP):", history)
    assert best >= 0.9, history
    assert parts["count"] == len(targets) and parts["iou"] > 0.5
