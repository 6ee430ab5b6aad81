"""Darknet's [yolo] training loss (src/yolo_layer.c: process_batch, delta_yolo_box,
delta_yolo_class; src/box.c: dx_box_iou), as a PyTorch loss.

Darknet does not compute a loss: it writes a *delta* (= −gradient) for every raw output
and back-propagates it.  :class:`YoloLoss` returns a scalar whose gradient with respect to
each raw head tensor (the training-mode output of :class:`darknet_kd.model.Darknet`) is
exactly ``−delta`` of Darknet's CPU forward_yolo_layer, times ``delta_normalizer`` (which
Darknet applies in backward_yolo_layer_gpu).  Its value is a readable loss that is 0 at the
optimum (box, obj and cls parts).

Scale.  The loss is the **sum** over the images of the mini-batch (Darknet's delta is per
image).  Darknet accumulates the weight gradients of all ``batch`` images of an update
(``batch/subdivisions`` per forward pass) and steps ``w += lr/batch · update``; so a trainer
reproduces Darknet's step with the cfg's learning_rate by back-propagating
``loss / net.batch`` for every forward pass and stepping SGD once per ``subdivisions`` passes.

How each delta becomes a loss (r = raw head value, c = the delta's weight):

- objectness, classes, x, y with new_coords=0: the [yolo] layer applies the logistic but its
  backward does not (delta = c·(t − σ(r)) lands on r itself).  That is the gradient of
  ``c·(softplus(r) − t·r)``: binary cross-entropy with logits; we subtract the target's
  entropy so that the value is 0 at the optimum.  With scale_x_y = s the output is
  s·σ(r) − (s−1)/2 and the loss is ``c·s·BCE(r, (t + (s−1)/2)/s)``.
- w, h (both codings) and everything with new_coords=1 (the conv before is logistic and
  back-propagates σ′ itself): ``c/(2s)·(y − t)²`` with y the layer's output.
- iou_loss giou/diou/ciou/iou: Darknet's delta is its own analytic formula (box.c:dx_box_iou:
  derivative in image-relative units, w/h derivatives not halved, no 1/grid chain factor, CIoU
  without the 1/(w²+h²) factor).  :class:`_DarknetIoUDelta` is an autograd function whose
  value is ``c·(1 − IoU-variant)`` and whose backward is exactly that delta (NaN → 0, clipped
  to ±max_delta, as delta_yolo_box does).

Assignment (process_batch):

1. Every prediction: objectness target 0 (weight obj_normalizer), unless its best IoU with a
   truth of the image exceeds ignore_thresh *and* one of its class probabilities exceeds 0.25
   (compare_yolo_class: any class, not the truth's) — then no objectness gradient
   (objectness_smooth=1: target = that IoU).  Best IoU > truth_thresh makes it positive for
   that truth.
2. Every truth: cell = floor(x·W), floor(y·H); anchor = best shape-IoU over *all* anchors of
   the layer's ``anchors=`` (centres aligned, first maximum); positive on this layer if the
   mask holds it.  With iou_thresh < 1, other masked anchors whose shape IoU (iou_thresh_kind)
   exceeds iou_thresh are positive too, and the box gradients of a cell are divided by its
   number of positive classes (averages_yolo_deltas).
3. Positive: objectness target 1 with weight cm·obj_normalizer, cm = counters_per_class
   multiplier of the class (1 without counters_per_class); class targets 1 for the truth
   class and 0 for the others (label_smooth_eps: 1−ε/2 and ε/2); counters_per_class sets the
   true class's weight to cm·cls_normalizer (cls_normalizer has no effect without
   counters_per_class, as in Darknet); box delta with weight iou_normalizer·cm (MSE also
   ·(2 − w·h)).
4. Two truths on the same cell and anchor (Darknet's "rewritten_bbox"): the box deltas
   *add up*, the objectness is the later truth's, and the classes become a union — the first
   truth sets all class targets, a later one only marks its own class positive (with weight
   cm, without cls_normalizer): delta_yolo_class's early return.

Not reproduced: focal_loss, the adversarial branch, bad-label rejection and equidistant_point
(network options rarely used for training); delta_yolo_class's full rewrite when a later
truth's class delta happens to be exactly 0 (a probability of exactly 0 or ε/2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import box as B
from ..errors import DarknetKDError

# Elements of a (images × predictions × truths) IoU block computed at once.
_IOU_BLOCK = 1 << 22


def _delta_loss(out: torch.Tensor, target: torch.Tensor, weight, logistic: bool, s: float = 1.0) -> torch.Tensor:
    """Elementwise loss whose gradient w.r.t. ``out`` is ``−weight·(target − y)``, where y is
    the [yolo] layer's output ``s·σ(out) − (s−1)/2`` (logistic) or ``s·out − (s−1)/2``."""
    if logistic:
        t = (target + (s - 1) / 2) / s
        tc = t.clamp(0, 1)
        entropy = -(torch.xlogy(tc, tc) + torch.xlogy(1 - tc, 1 - tc))
        return weight * s * (F.softplus(out) - t * out - entropy)
    y = s * out - (s - 1) / 2 if s != 1.0 else out
    return weight / (2 * s) * (y - target) ** 2


def darknet_iou_delta(pred: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
    """Darknet's box.c:dx_box_iou, vectorised: (E, 4) xywh boxes -> (E, 4) "gradient" of the
    IoU variant ``kind`` w.r.t. pred x, y, w, h, as Darknet defines it (positive = towards the
    truth).  For w, h it is the derivative w.r.t. the right/bottom minus the left/top edge
    (twice the true derivative); the DIoU/CIoU distance term uses d²/c² (no 0.6 power); where
    the boxes do not overlap, GIoU/DIoU/CIoU keep only their penalty term."""
    px, py, pw, ph = pred.unbind(-1)
    tx, ty, tw, th = truth.unbind(-1)
    zero = torch.zeros_like(px)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pt, pb = torch.minimum(top, bot), torch.maximum(top, bot)
    pl, pr = torch.minimum(left, right), torch.maximum(left, right)
    tt, tb, tl, tr = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pb - pt) * (pr - pl)
    Xhat = (tb - tt) * (tr - tl)
    Ih = torch.minimum(pb, tb) - torch.maximum(pt, tt)
    Iw = torch.minimum(pr, tr) - torch.maximum(pl, tl)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    gCw = torch.maximum(pr, tr) - torch.minimum(pl, tl)
    gCh = torch.maximum(pb, tb) - torch.minimum(pt, tt)
    gC = gCw * gCh
    dX = {"t": -(pr - pl), "b": pr - pl, "l": -(pb - pt), "r": pb - pt}
    dI = {"t": torch.where(pt > tt, -Iw, zero), "b": torch.where(pb < tb, Iw, zero),
          "l": torch.where(pl > tl, -Ih, zero), "r": torch.where(pr < tr, Ih, zero)}
    dU = {k: dX[k] - dI[k] for k in dX}
    dC = {"t": torch.where(pt < tt, -gCw, zero), "b": torch.where(pb > tb, gCw, zero),
          "l": torch.where(pl < tl, -gCh, zero), "r": torch.where(pr > tr, gCh, zero)}
    p = {k: torch.where(U > 0, (U * dI[k] - I * dU[k]) / (U * U), zero) for k in dX}
    # "correct corner selection": only matters for a degenerate (flipped) box.
    p["t"] = torch.where(top < bot, p["t"], p["b"])
    p["l"] = torch.where(left < right, p["l"], p["r"])
    apart = (Iw <= 0) | (Ih <= 0)
    if kind == "giou":
        g = {k: (gC * dU[k] - U * dC[k]) / (gC * gC) for k in dX}
        p = {k: torch.where(apart, g[k], torch.where(gC > 0, p[k] + g[k], p[k])) for k in dX}
    dx, dy = p["l"] + p["r"], p["t"] + p["b"]
    dw, dh = p["r"] - p["l"], p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        Ct = torch.minimum(py - ph / 2, tt)
        Cb = torch.maximum(py + ph / 2, tb)
        Cl = torch.minimum(px - pw / 2, tl)
        Cr = torch.maximum(px + pw / 2, tr)
        Cw, Ch = Cr - Cl, Cb - Ct
        C = Cw * Cw + Ch * Ch
        one = torch.ones_like(px)
        dCw_dx = torch.where(pr > tr, one, zero) - torch.where(pl < tl, one, zero)
        dCw_dw = torch.where(pr > tr, 0.5 * one, zero) - torch.where(pl < tl, -0.5 * one, zero)
        dCh_dy = torch.where(pb > tb, one, zero) - torch.where(pt < tt, one, zero)
        dCh_dh = torch.where(pb > tb, 0.5 * one, zero) - torch.where(pt < tt, -0.5 * one, zero)
        ddx = (2 * (tx - px) * C - 2 * Cw * dCw_dx * S) / (C * C)
        ddy = (2 * (ty - py) * C - 2 * Ch * dCh_dy * S) / (C * C)
        ddw = 2 * Cw * dCw_dw * S / (C * C)
        ddh = 2 * Ch * dCh_dh * S / (C * C)
        if kind == "ciou":
            diff = torch.atan(tw / th) - torch.atan(pw / ph)
            ar_loss = 4 / math.pi ** 2 * diff * diff
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            ddw = ddw + alpha * 8 / math.pi ** 2 * diff * ph
            ddh = ddh - alpha * 8 / math.pi ** 2 * diff * pw
        pos = C > 0
        dx = torch.where(apart, ddx, torch.where(pos, dx + ddx, dx))
        dy = torch.where(apart, ddy, torch.where(pos, dy + ddy, dy))
        dw = torch.where(apart, ddw, torch.where(pos, dw + ddw, dw))
        dh = torch.where(apart, ddh, torch.where(pos, dh + ddh, dh))
    return torch.stack([dx, dy, dw, dh], -1)


class _DarknetIoUDelta(torch.autograd.Function):
    """Value c·(1 − IoU-variant(pred, truth)) per event; backward = −Darknet's delta.

    ``raw`` (E, 4) are the head values x, y, w, h of the event's cell/anchor; ``cell`` (E, 2)
    its column and row; ``anchor`` (E, 2) the anchor size relative to the network input;
    ``coef`` (E,) = iou_normalizer·cm.  Mirrors delta_yolo_box's IoU branch.
    """

    @staticmethod
    def forward(ctx, raw, cell, grid_wh, anchor, truth, coef, kind, s, new_coords, max_delta):
        xy = raw[:, :2] if new_coords else torch.sigmoid(raw[:, :2])
        xy = s * xy - (s - 1) / 2
        wh = raw[:, 2:] ** 2 * 4 * anchor if new_coords else torch.exp(raw[:, 2:]) * anchor
        # Darknet replaces a zero width/height by 1 before dx_box_iou ("avoid nan").
        pred = torch.cat([(cell + xy) / grid_wh, torch.where(wh == 0, torch.ones_like(wh), wh)], 1)
        value = torch.nan_to_num(coef * (1 - B.iou(pred, truth, kind)), nan=0.0, posinf=0.0, neginf=0.0)
        d = darknet_iou_delta(pred, truth, kind)
        if not new_coords:
            d = torch.cat([d[:, :2], d[:, 2:] * torch.exp(raw[:, 2:])], 1)
        d = torch.nan_to_num(d * coef[:, None], nan=0.0, posinf=0.0, neginf=0.0)
        if math.isfinite(max_delta):
            d = d.clamp(-max_delta, max_delta)
        ctx.save_for_backward(d)
        return value

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return -grad[:, None] * d, None, None, None, None, None, None, None, None, None


def class_multipliers(layer) -> list[float] | None:
    """counters_per_class -> per-class multipliers max_count/count (counts < 1 read as 1),
    capped at max_delta (parser.c:get_classes_multipliers); None without counters_per_class."""
    counts = layer.counters_per_class
    if counts is None:
        return None
    counts = [max(int(c), 1) for c in counts]
    top = float(max(counts))
    return [min(top / c, layer.max_delta) for c in counts]


class YoloLoss:
    """Darknet's [yolo] training loss for every [yolo] layer of ``model``.

    ``loss, parts = criterion(heads, targets, net_hw)``: ``heads`` is the training-mode output
    of the model (one (B, A·(5+C), H, W) tensor per [yolo] layer), ``targets`` an (M, 6) tensor
    of rows ``[image index, class, cx, cy, w, h]`` relative to the network input (rows of one
    image in label order; Darknet sees at most ``max=`` of them), ``net_hw`` the input size
    (anchors are in its pixels; default: the cfg's).  ``loss`` is summed over the images (see
    the module docstring for the scale); ``parts`` holds detached scalars: box, obj, cls,
    total, count (positive truth/anchor pairs) and iou (their mean IoU, Darknet's "Avg IOU").
    ``ignore`` (optional): one (B, A, H, W) bool mask per [yolo] layer of slots whose
    no-object term is dropped as ignore_thresh drops it (the adaptation's ignore band).
    """

    def __init__(self, model):
        self.layers = list(getattr(model, "yolo_layers", model))
        if not self.layers:
            raise DarknetKDError("YoloLoss needs a model with at least one [yolo] layer")
        self.classes = self.layers[0].classes

    def __call__(self, heads, targets: torch.Tensor, net_hw: tuple[int, int] | None = None, ignore=None):
        if len(heads) != len(self.layers):
            raise DarknetKDError(f"got {len(heads)} head tensors for {len(self.layers)} [yolo] layers")
        batch = heads[0].shape[0]
        device = heads[0].device
        targets = self._check_targets(targets, batch).to(device=device, dtype=torch.float32)
        if net_hw is None:
            net_hw = (self.layers[0].net_h, self.layers[0].net_w)
        parts = {k: torch.zeros((), device=device) for k in ("box", "obj", "cls", "count", "iou_sum")}
        total = torch.zeros((), device=device)
        if ignore is None:
            ignore = [None] * len(heads)
        elif len(ignore) != len(heads) or any(m.numel() != h[:, :1].numel() * len(l.mask)
                                                for m, h, l in zip(ignore, heads, self.layers)):
            raise DarknetKDError("ignore must hold one (B, A, H, W) bool mask per [yolo] layer")
        for layer, head, ign in zip(self.layers, heads, ignore):
            loss, p = _layer_loss(layer, head, targets, net_hw, ign)
            total = total + loss
            for k in parts:
                parts[k] = parts[k] + p[k]
        out = {k: parts[k].detach() for k in ("box", "obj", "cls")}
        out["total"] = total.detach()
        out["count"] = parts["count"]
        out["iou"] = parts["iou_sum"] / parts["count"].clamp(min=1)
        return total, out

    def _check_targets(self, targets, batch: int) -> torch.Tensor:
        """Rows must be [image index < batch, class < classes, cx, cy in [0,1], w, h > 0]."""
        if not isinstance(targets, torch.Tensor) or targets.dim() != 2 or targets.shape[1] != 6:
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise DarknetKDError(f"targets must be an (M, 6) tensor [image, class, cx, cy, w, h], got {shape}")
        t = targets.detach().float().cpu()
        bad = ~torch.isfinite(t).all(1)
        bad |= (t[:, 0] < 0) | (t[:, 0] >= batch) | (t[:, 0] != t[:, 0].round())
        bad |= (t[:, 1] < 0) | (t[:, 1] >= self.classes) | (t[:, 1] != t[:, 1].round())
        bad |= (t[:, 2:4] < 0).any(1) | (t[:, 2:4] > 1).any(1) | (t[:, 4:6] <= 0).any(1)
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise DarknetKDError(f"target row {k} = {t[k].tolist()} is not [image index in 0..{batch - 1}, "
                                 f"class in 0..{self.classes - 1}, cx, cy in [0, 1], w > 0, h > 0]")
        return targets


def _layer_loss(layer, head: torch.Tensor, targets: torch.Tensor, net_hw, extra_ignore=None):
    """One [yolo] layer: (loss, parts) with parts box/obj/cls/count/iou_sum.  ``extra_ignore``
    (B, A, H, W) bool: slots whose background (no-object) term is dropped, like ignore_thresh's;
    a slot that a truth is assigned to still gets its positive terms."""
    net_h, net_w = net_hw
    nb, _, H, W = head.shape
    A, C = len(layer.mask), layer.classes
    dev = head.device
    logistic = not layer.new_coords
    s = float(layer.scale_x_y)
    raw = head.float().view(nb, A, 5 + C, H, W).permute(0, 1, 3, 4, 2).reshape(-1, 5 + C)  # slot-major
    with torch.no_grad():
        dec = layer.decode(head.detach().float(), (net_h, net_w)).view(-1, 5 + C)
    pbox, pobj, pcls = dec[:, :4], dec[:, 4], dec[:, 5:]
    mult = class_multipliers(layer)
    mult_t = torch.tensor(mult, device=dev) if mult is not None else torch.ones(C, device=dev)

    # Truths in per-image label order; Darknet holds at most `max` per image.
    bidx = targets[:, 0].long()
    order = torch.argsort(bidx, stable=True)
    counts = torch.bincount(bidx, minlength=nb)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(bidx)
    rank[order] = torch.arange(len(bidx), device=dev) - starts[bidx[order]]
    keep = rank < layer.max_boxes
    tg, bidx, rank = targets[keep], bidx[keep], rank[keep]
    tcls, tbox = tg[:, 1].long(), tg[:, 2:6]
    M = len(tg)
    T = int(rank.max()) + 1 if M else 1
    pad = torch.zeros(nb, T, 4, device=dev)
    pad[bidx, rank] = tbox
    row_of = torch.zeros(nb, T, dtype=torch.long, device=dev)
    row_of[bidx, rank] = torch.arange(M, device=dev)
    valid = torch.zeros(nb, T, dtype=torch.bool, device=dev)
    valid[bidx, rank] = True

    # 1. every prediction: best IoU with the image's truths (ignore_thresh, truth_thresh).
    N = A * H * W
    best_iou = torch.zeros(nb, N, device=dev)
    best_t = torch.zeros(nb, N, dtype=torch.long, device=dev)
    step = max(1, _IOU_BLOCK // max(1, N * T))
    pb = pbox.view(nb, N, 4)
    for b0 in range(0, nb, step):
        ious = B.pairwise_iou(pb[b0:b0 + step], pad[b0:b0 + step])
        ious = torch.where(valid[b0:b0 + step, None, :], ious, torch.zeros_like(ious))
        best_iou[b0:b0 + step], best_t[b0:b0 + step] = ious.max(-1)
    best_iou, best_t = best_iou.view(-1), best_t.view(-1)
    match = torch.where((pcls > 0.25).any(-1), best_iou, torch.zeros_like(best_iou))
    ignore = match > layer.ignore_thresh
    obj_t = torch.zeros_like(pobj)
    obj_w = torch.full_like(pobj, layer.obj_normalizer)
    if layer.objectness_smooth:
        raise_to = ignore & (match > 0)
        obj_t = torch.where(raise_to, match, obj_t)
    else:
        obj_w = torch.where(ignore, torch.zeros_like(obj_w), obj_w)
    if extra_ignore is not None:
        obj_w = torch.where(extra_ignore.reshape(-1).to(dev), torch.zeros_like(obj_w), obj_w)
    tt = best_iou > layer.truth_thresh
    obj_t = torch.where(tt, best_iou ** 2 if layer.objectness_smooth else torch.ones_like(obj_t), obj_t)
    obj_w = torch.where(tt, torch.full_like(obj_w, layer.obj_normalizer), obj_w)

    # Events = (slot, truth row, anchor, order key); slot = flat (image, mask index, row, col).
    mask_t = torch.tensor(layer.mask, device=dev)
    tt_slot = tt.nonzero().view(-1)
    tt_b = tt_slot // N
    ev = [(tt_slot, row_of[tt_b, best_t[tt_slot]], mask_t[(tt_slot // (H * W)) % A],
           torch.full_like(tt_slot, -1))]
    # 2. every truth: best anchor over all anchors; others above iou_thresh (iou_thresh_kind).
    anchors = torch.tensor(layer.anchors, device=dev) / torch.tensor([net_w, net_h], device=dev)
    lut = torch.full((len(layer.anchors),), -1, dtype=torch.long, device=dev)
    for a in reversed(range(A)):                       # int_index: the first mask position
        lut[layer.mask[a]] = a
    col = (tbox[:, 0] * W).long().clamp(max=W - 1)
    row = (tbox[:, 1] * H).long().clamp(max=H - 1)
    shape_t = torch.cat([torch.zeros(M, 2, device=dev), tbox[:, 2:]], 1)
    shape_a = torch.cat([torch.zeros_like(anchors), anchors], 1)
    best_n = B.pairwise_iou(shape_t, shape_a).argmax(1) if M else torch.zeros(0, dtype=torch.long, device=dev)
    chosen = torch.zeros(M, len(layer.anchors), dtype=torch.bool, device=dev)
    chosen[torch.arange(M, device=dev), best_n] = True
    if layer.iou_thresh < 1.0:
        kind_iou = B.pairwise_iou(shape_t, shape_a, layer.iou_thresh_kind)
        chosen |= kind_iou > layer.iou_thresh
    chosen &= (lut >= 0)[None, :]
    m_idx, n_idx = chosen.nonzero(as_tuple=True)
    slot2 = ((bidx[m_idx] * A + lut[n_idx]) * H + row[m_idx]) * W + col[m_idx]
    ev.append((slot2, m_idx, n_idx, m_idx))
    ev_slot, ev_row, ev_n, ev_key = (torch.cat(x) for x in zip(*ev))
    is_tt = ev_key < 0
    n_tt = len(tt_slot)

    zero = head.sum() * 0.0
    parts = {"count": torch.tensor(float(len(m_idx)), device=dev)}
    if len(ev_slot) == 0:
        obj = _delta_loss(raw[:, 4], obj_t, obj_w, logistic).sum()
        scale = layer.delta_normalizer
        parts.update(box=zero.detach(), obj=obj.detach() * scale, cls=zero.detach(), iou_sum=zero.detach())
        return obj * scale, parts

    ev_cls = tcls[ev_row]
    ev_cm = mult_t[ev_cls]
    S_all = len(pobj)
    # Objectness of positives: the last truth wins (objectness_smooth: only where still 0).
    pos = ~is_tt
    slot_p, key_p = ev_slot[pos], ev_key[pos]
    if layer.objectness_smooth:
        first = torch.full((S_all,), M, dtype=torch.long, device=dev).scatter_reduce(0, slot_p, key_p, "amin")
        sel = key_p == first[slot_p]
        still0 = (obj_w * (obj_t - pobj) == 0)[slot_p] & sel
        obj_t[slot_p[still0]] = 1.0
        obj_w[slot_p[still0]] = ev_cm[pos][still0] * layer.obj_normalizer
    else:
        last = torch.full((S_all,), -1, dtype=torch.long, device=dev).scatter_reduce(0, slot_p, key_p, "amax")
        sel = key_p == last[slot_p]
        obj_t[slot_p[sel]] = 1.0
        obj_w[slot_p[sel]] = ev_cm[pos][sel] * layer.obj_normalizer

    # Classes of positive cells: the first truth sets all, later ones add their class.
    u_slot, ev_u = torch.unique(ev_slot, return_inverse=True)
    U = len(u_slot)
    eps = layer.label_smooth_eps
    y_pos, y_neg = (1 - eps / 2, eps / 2) if eps else (1.0, 0.0)
    first = torch.full((U,), M, dtype=torch.long, device=dev).scatter_reduce(0, ev_u, ev_key, "amin")
    is_first = ev_key == first[ev_u]
    cls_t = torch.full((U, C), y_neg, device=dev)
    cls_w = torch.ones(U, C, device=dev)
    fu, fc = ev_u[is_first], ev_cls[is_first]
    f_t = torch.full_like(fu, y_pos, dtype=torch.float32)
    f_w = ev_cm[is_first] * layer.cls_normalizer if mult is not None else torch.ones_like(f_t)
    if layer.objectness_smooth and n_tt:           # truth_thresh positive: target IoU², weight cm
        smooth = is_tt[is_first]
        f_t = torch.where(smooth, best_iou[ev_slot[is_first]] ** 2, f_t)
        f_w = torch.where(smooth, ev_cm[is_first], f_w)
    cls_t[fu, fc] = f_t
    cls_w[fu, fc] = f_w
    lu, lc = ev_u[~is_first], ev_cls[~is_first]
    cls_t[lu, lc] = y_pos
    cls_w[lu, lc] = ev_cm[~is_first]

    # Box: one term per event, summed; iou_thresh < 1 divides a cell's by its positive classes.
    box_w = torch.ones(len(ev_slot), device=dev)
    if layer.iou_thresh < 1.0:
        npos = (cls_w * (cls_t - pcls[u_slot]) > 0).sum(1)
        obj_nz = (obj_w * (obj_t - pobj))[u_slot] != 0
        div = torch.where(obj_nz & (npos > 0), npos.float(), torch.ones_like(npos, dtype=torch.float32))
        box_w = 1.0 / div[ev_u]
    tb = tbox[ev_row]
    cell = torch.stack([ev_slot % W, (ev_slot // W) % H], 1).float()
    grid = torch.tensor([float(W), float(H)], device=dev)
    anc = anchors[ev_n]
    rb = raw[ev_slot, :4]
    coef = layer.iou_normalizer * ev_cm
    if layer.iou_loss == "mse":
        c = coef * (2 - tb[:, 2] * tb[:, 3]) * box_w
        txy = tb[:, :2] * grid - cell
        if layer.new_coords:
            twh = torch.sqrt(tb[:, 2:] / (4 * anc))
        else:
            twh = torch.log(tb[:, 2:] / anc)
        box = (_delta_loss(rb[:, :2], txy, c[:, None], logistic, s).sum()
               + _delta_loss(rb[:, 2:], twh, c[:, None], False).sum())
    else:
        box = (_DarknetIoUDelta.apply(rb, cell, grid, anc, tb, coef, layer.iou_loss, s, bool(layer.new_coords),
                                      float(layer.max_delta)) * box_w).sum()
    obj = _delta_loss(raw[:, 4], obj_t, obj_w, logistic).sum()
    cls = _delta_loss(raw[u_slot, 5:], cls_t, cls_w, logistic).sum()
    scale = layer.delta_normalizer
    with torch.no_grad():
        iou_sum = B.iou(pbox[ev_slot[pos]], tb[pos]).sum()
    parts.update(box=box.detach() * scale, obj=obj.detach() * scale, cls=cls.detach() * scale, iou_sum=iou_sum)
    return (box + obj + cls) * scale, parts
