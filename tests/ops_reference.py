"""Python references for the core ops' tests (tests only: the project has one NMS, one
decode, one KD loss — these exist to check them).  Darknet-literal float32 arithmetic."""
from __future__ import annotations

import numpy as np
import torch

from darknet_kd.box import pairwise_iou


def darknet_criterion(boxes: torch.Tensor, kind: str, beta: float = 0.6) -> torch.Tensor:
    """(n, n) NMS criterion between boxes (cx, cy, w, h), row = the earlier (kept) box:
    box_iou, box_diou (greedynms, exponent 0.6) or box_diounms (exponent beta), src/box.c."""
    iou = pairwise_iou(boxes, boxes, "iou")
    if kind in ("default", "cornersnms"):
        return iou
    cx, cy, w, h = boxes.unbind(-1)
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    left = torch.minimum(x1[:, None], x1[None, :])
    right = torch.maximum(x2[:, None], x2[None, :])
    top = torch.minimum(y1[:, None], y1[None, :])
    bot = torch.maximum(y2[:, None], y2[None, :])
    cw, ch = right - left, bot - top
    c = cw * cw + ch * ch
    dx, dy = cx[:, None] - cx[None, :], cy[:, None] - cy[None, :]
    d = dx * dx + dy * dy
    e = 0.6 if kind == "greedynms" else float(np.float32(beta))
    safe = torch.where(c != 0, c, torch.ones_like(c))
    u = (d / safe).double().pow(e).float()
    return torch.where(c != 0, iou - u, iou)


def reference_nms(boxes, scores, iou_thresh, score_thresh=0.0, batch=None, num_images=None, max_det=None,
                  kind="default", beta=0.6) -> torch.Tensor:
    """(N, C) bool keep mask, Darknet's greedy per-image per-class NMS (ties: lower index)."""
    scores = scores.reshape(boxes.shape[0], -1)
    n, c = scores.shape
    batch = torch.zeros(n, dtype=torch.int64) if batch is None else batch
    num_images = int(batch.max()) + 1 if num_images is None and n else (num_images or 1)
    keep = torch.zeros((n, c), dtype=torch.bool)
    sc = scores.numpy()
    cand = sc > score_thresh
    bn = batch.numpy()
    for b in range(num_images):
        in_image = np.nonzero(bn == b)[0]
        over = (darknet_criterion(boxes[torch.from_numpy(in_image)], kind, beta) > iou_thresh).numpy()
        for k in np.nonzero(cand[in_image].any(0))[0]:
            pos = np.nonzero(cand[in_image, k])[0]
            pos = pos[np.argsort(-sc[in_image[pos], k], kind="stable")]
            idx = in_image[pos]
            crit = over[np.ix_(pos, pos)]
            suppressed = np.zeros(len(idx), dtype=bool)
            for i in range(len(idx)):
                if suppressed[i]:
                    continue
                keep[idx[i], k] = True
                suppressed[i + 1:] |= crit[i, i + 1:]
        in_image = torch.from_numpy(in_image)
        if max_det:
            ii, kk = keep[in_image].nonzero(as_tuple=True)
            ii = in_image[ii]
            if len(ii) > max_det:
                rows = sorted(zip((-scores[ii, kk]).tolist(), kk.tolist(), ii.tolist()))
                keep[ii, kk] = False
                for _, k, i in rows[:max_det]:
                    keep[i, k] = True
    return keep


def correct_letterbox(rows: torch.Tensor, im_w: int, im_h: int, net_w: int, net_h: int) -> torch.Tensor:
    """Darknet's correct_yolo_boxes (src/yolo_layer.c) with letter=1, in its float/double mix."""
    if net_w / im_w < net_h / im_h:  # (float)netw / w < (float)neth / h
        new_w, new_h = net_w, (im_h * net_w) // im_w
    else:
        new_h, new_w = net_h, (im_w * net_h) // im_h
    f = np.float32
    deltaw, deltah = f(net_w - new_w), f(net_h - new_h)
    ratiow, ratioh = f(f(new_w) / f(net_w)), f(f(new_h) / f(net_h))
    out = rows.clone()
    x = rows[:, 0].double()
    y = rows[:, 1].double()
    out[:, 0] = ((x - float(deltaw) / 2.0 / net_w) / float(ratiow)).float()
    out[:, 1] = ((y - float(deltah) / 2.0 / net_h) / float(ratioh)).float()
    out[:, 2] = rows[:, 2] * float(f(f(1) / ratiow))
    out[:, 3] = rows[:, 3] * float(f(f(1) / ratioh))
    return out
