"""``darknet-kd map DATA CFG WEIGHTS``: ``darknet detector map`` (detector.c:
validate_detector_map) on our model.

The steps, as Darknet takes them:

1. the ``valid=`` list of the .data file (and its ``difficult=`` list, parallel to it);
   labels by Darknet's image -> label path rule;
2. each image stretched to the network size, or letterboxed when the cfg's [net] sets
   ``letter_box=1`` (the CLI's -letter_box does not count in ``map``: validate_detector_map
   overwrites it with net.letter_box), by Darknet's own float resize_image / letterbox_image
   (:class:`~darknet_kd.data.dataset.EvalDataset`: the network input equals Darknet's);
3. the model's decoded rows; candidates are the rows with objectness > 0.005, their
   per-class probs ``obj * cls`` zeroed at or below 0.005 (yolo_layer.c:
   get_yolo_detections); boxes mapped back through the letterbox correction
   (correct_yolo_boxes) to the original image;
4. NMS 0.45 of the kind of the last [yolo] layer (nms_kind, beta_nms), per class;
5. the survivors, in the order do_nms_sort leaves them (below), go to the one mAP
   (:mod:`.voc_map`) -- per-class AP, mAP, and P/R/F1/TP/FP/FN/avg IoU at ``--thresh``.

do_nms_sort's order: it sorts the detections by the prob of class 0, then of class 1, ...
up to the last class with glibc's stable qsort, each sort on values NMS has not yet
touched, so the detections end up ordered by (prob[C-1], ..., prob[0]) descending, ties in
get_network_boxes order (yolo layer, cell, anchor). That order decides ties in the ranking
and which detection of an image claims a truth first at ``--thresh``.

``--coco`` adds COCO mAP@[.5:.95] through pycocotools on the same detections
(:mod:`.coco`). ``--json OUT`` writes the numbers as JSON and a Markdown table beside it
(``OUT`` with the suffix ``.md``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.convert import to_coco
from ..data.darknet import DataConfig, label_path, read_data_file, read_labels, read_list
from ..data.dataset import EvalDataset, collate, load_all_labels, to_original_boxes
from ..errors import DataError, DarknetKDError
from ..fileio import atomic_write
from .coco import CocoResult, coco_map
from .voc_map import DarknetMap, MapResult

#: validate_detector_map's hard-coded detection threshold and NMS threshold
DET_THRESH = 0.005
NMS_THRESH = 0.45


@dataclass
class EvalResult:
    darknet: MapResult
    coco: CocoResult | None
    names: list[str]

    def report(self) -> str:
        text = self.darknet.format_report(self.names)
        if self.coco is not None:
            text += "\n COCO (pycocotools):\n" + self.coco.summary
        return text

    def to_dict(self) -> dict:
        d = {"darknet": self.darknet.to_dict(self.names)}
        if self.coco is not None:
            d["coco"] = self.coco.to_dict(self.names)
        return d

    def to_markdown(self) -> str:
        md = self.darknet.to_markdown(self.names)
        if self.coco is not None:
            md += f"\nCOCO mAP@[.5:.95] = {self.coco.map * 100:.2f}, AP50 = {self.coco.stats[1] * 100:.2f}\n"
        return md


def darknet_row_order(model) -> np.ndarray:
    """Position of each row of the model's decoded output (yolo layer, anchor, row, col)
    in Darknet's get_network_boxes order (yolo layer, cell, anchor)."""
    pos, offset = [], 0
    for y in model.yolo_layers:
        a, h, w = y.num_masked, y.in_shape.h, y.in_shape.w
        anchor, cell = np.divmod(np.arange(a * h * w), h * w)
        pos.append(offset + cell * a + anchor)
        offset += a * h * w
    return np.concatenate(pos)


def nms_order(probs: np.ndarray, row_pos: np.ndarray) -> np.ndarray:
    """The order do_nms_sort leaves the detections in: by prob[C-1] descending, then
    prob[C-2], ..., prob[0] (the pre-NMS values), then Darknet's row position."""
    keys = [row_pos] + [-probs[:, c] for c in range(probs.shape[1])]
    return np.lexsort(keys)


def darknet_nms(boxes: torch.Tensor, probs: torch.Tensor, batch: torch.Tensor, n_images: int, kind: str,
                beta: float) -> torch.Tensor:
    """Darknet's do_nms_sort / diounms_sort keep mask (N, C) through the project's one NMS
    (darknet_kd.ops.nms_mask). Rows must come in get_network_boxes order per image.

    The op breaks score ties by lower row index; Darknet's stable qsort for class k breaks
    them by the order its sorts for classes 0..k-1 left (prob[k-1] descending, then
    prob[k-2], ...). That order only matters for classes with tied scores in one image
    (e.g. several probs saturated at exactly 1.0), so only those are run again, each on
    its rows in Darknet's order for that class."""
    from ..ops import nms_mask

    kw = dict(score_thresh=DET_THRESH, num_images=n_images, kind=kind, beta_nms=beta)
    keep = nms_mask(boxes, probs, NMS_THRESH, batch=batch, **kw)
    b_np, p_np = batch.cpu().numpy(), probs.cpu().numpy()
    tied = _tied_classes(b_np, p_np)
    if len(tied):
        order = np.arange(len(b_np))
        for k in range(int(tied.max()) + 1):
            if k in tied:
                o = torch.from_numpy(order).to(boxes.device)
                keep[o, k] = nms_mask(boxes[o], probs[o, k:k + 1].contiguous(), NMS_THRESH, batch=batch[o], **kw)[:, 0]
            order = order[np.argsort(-p_np[order, k], kind="stable")]
    return keep


def _tied_classes(batch: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Classes with two candidates (prob > .005) of equal prob in one image."""
    r, k = np.nonzero(probs > DET_THRESH)
    b, p = batch[r], probs[r, k]
    o = np.lexsort((p, k, b))
    b, k, p = b[o], k[o], p[o]
    same = (b[1:] == b[:-1]) & (k[1:] == k[:-1]) & (p[1:] == p[:-1])
    return np.unique(k[1:][same])


def detect_batch(model, images: torch.Tensor, infos, row_pos: np.ndarray):
    """Darknet's detections of one batch: per image ``(boxes (n,4) relative to the
    original image, probs (n,C))`` after thresholding and NMS, in do_nms_sort's order."""
    out = model(images)                                  # (B, N, 5+C), eval mode
    finite = torch.isfinite(out).flatten(1).all(dim=1)
    if not bool(finite.all()):     # NaN scores would drop out of the thresholds silently (a 0 mAP)
        b = int(torch.nonzero(~finite)[0])
        raise DarknetKDError("the model's output on this image is NaN or infinite: its weights have diverged "
                             "(a learning rate too high for the run's warm-up, or a damaged .weights file)",
                             infos[b].get("path") if infos and b < len(infos) else None)
    net_h, net_w = (int(v) for v in images.shape[-2:])
    last = model.yolo_layers[-1]
    b_idx, r_idx = torch.nonzero(out[..., 4] > DET_THRESH, as_tuple=True)
    # candidates in get_network_boxes order: image, then (yolo layer, cell, anchor)
    pos = row_pos[r_idx.cpu().numpy()]
    order = torch.from_numpy(np.lexsort((pos, b_idx.cpu().numpy()))).to(out.device)
    b_idx, r_idx, pos = b_idx[order], r_idx[order], pos[order.cpu().numpy()]
    rows = out[b_idx, r_idx]
    probs = rows[:, 4:5] * rows[:, 5:]
    probs = torch.where(probs > DET_THRESH, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    boxes = rows[:, :4].contiguous()
    if infos and infos[0].get("letter_box"):
        boxes = boxes.cpu().numpy()
        b_np = b_idx.cpu().numpy()
        for b, info in enumerate(infos):
            sel = b_np == b
            ow, oh = info["orig_size"]
            boxes[sel] = to_original_boxes(boxes[sel].astype(np.float64), ow, oh, net_w, net_h, True)
        boxes = torch.from_numpy(boxes).to(out.device)
    keep = darknet_nms(boxes, probs.contiguous(), b_idx, len(infos), last.nms_kind, last.beta_nms)
    boxes, probs, keep = boxes.cpu().numpy(), probs.cpu().numpy(), keep.cpu().numpy()
    b_np = b_idx.cpu().numpy()
    result = []
    for b in range(len(infos)):
        sel = np.nonzero(b_np == b)[0]
        o = sel[nms_order(probs[sel], pos[sel])]
        result.append((boxes[o], np.where(keep[o], probs[o], np.float32(0))))
    return result


def _difficult_labels(data: DataConfig, n: int, num_classes: int):
    """Labels of the ``difficult=`` list (Darknet: parallel to ``valid=``), or None."""
    if data.get("difficult") is None:
        return None
    paths = read_list(data.resolve("difficult"), anchors=(data.root,))
    if len(paths) != n:
        raise DataError(f"the difficult list has {len(paths)} images but the valid list has {n} "
                        "(Darknet reads them in parallel)", data.resolve("difficult"))
    return [read_labels(label_path(p), num_classes) for p in paths]


def evaluate(model, data: DataConfig, *, key: str = "valid", iou_thresh: float = 0.5, points: int = 0,
             conf_thresh: float = 0.25, coco: bool = False, batch_size: int = 8, workers: int = 2,
             device: str | torch.device | None = None, progress: bool = True) -> EvalResult:
    """``darknet detector map`` of ``model`` on the ``key`` list of ``data``; the model is
    put in eval mode and returned to its previous mode afterwards."""
    names = data.class_names()
    if model.num_classes != data.classes:
        raise DataError(f"classes={data.classes} but the model's [yolo] layers have classes={model.num_classes}",
                        data.path)
    images = data.images(key)
    if not images:
        raise DataError(f"the '{key}=' list is empty", data.resolve(key))
    net = model.net
    labels = load_all_labels(images, data.classes)
    difficult = _difficult_labels(data, len(images), data.classes)
    ds = EvalDataset(images, data.classes, net.width, net.height, bool(net.letter_box), labels=labels)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate,
                                         num_workers=workers)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    row_pos = darknet_row_order(model)
    acc = DarknetMap(data.classes, iou_thresh, conf_thresh)
    coco_dets = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _, infos in tqdm(loader, desc="map", unit="batch", disable=not progress, file=sys.stderr):
                dets = detect_batch(model, x.to(device), infos, row_pos)
                for info, (boxes, probs) in zip(infos, dets):
                    i = info["index"]
                    acc.add_image(boxes, probs, labels[i], None if difficult is None else difficult[i],
                                  source=label_path(images[i]))
                    if coco:
                        coco_dets.append((boxes, probs))
    finally:
        model.train(was_training)
    result = acc.result(points, names)
    # ground truth by the converter (image id = list position + 1, the loader's order)
    coco_result = coco_map(to_coco(data, key), coco_dets) if coco else None
    return EvalResult(result, coco_result, names)


# ---------------------------------------------------------------- command

def add_parser(sub) -> None:
    p = sub.add_parser("map", help="mAP as `darknet detector map` (optionally COCO mAP)",
                       description="Darknet's mAP of a .cfg + .weights on the valid= list of a .data file, "
                                   "exactly as `darknet detector map` computes it.")
    p.add_argument("data", help=".data file (valid=, names=, optional difficult=)")
    p.add_argument("cfg", help="Darknet .cfg")
    p.add_argument("weights", help="Darknet .weights")
    p.add_argument("--iou", type=float, default=0.5, help="IoU a match must exceed (Darknet -iou_thresh)")
    p.add_argument("--points", type=int, default=0,
                   help="0: area under the curve (default), 11: VOC2007, 101: COCO (Darknet -points)")
    p.add_argument("--thresh", type=float, default=0.25,
                   help="confidence for the P/R/F1/TP/FP/avg IoU line (Darknet -thresh)")
    p.add_argument("--coco", action="store_true", help="also COCO mAP@[.5:.95] through pycocotools")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT and a Markdown table to OUT.md")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="image loading processes")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.set_defaults(func=_run)


def markdown_path(out: Path) -> Path:
    """Where ``--json OUT`` puts its Markdown table: OUT.json -> OUT.md, else OUT + .md."""
    return out.with_suffix(".md") if out.suffix == ".json" else out.with_name(out.name + ".md")


def _run(args) -> int:
    from ..model import load

    if args.points < 0 or args.points == 1:
        raise DarknetKDError(f"--points must be 0 or >= 2, got {args.points}")
    if args.batch < 1 or args.workers < 0:
        raise DarknetKDError("--batch must be >= 1 and --workers >= 0")
    data = read_data_file(args.data)
    model = load(args.cfg, args.weights).to(args.device)
    res = evaluate(model, data, iou_thresh=args.iou, points=args.points, conf_thresh=args.thresh,
                   coco=args.coco, batch_size=args.batch, workers=args.workers, device=args.device)
    sys.stdout.write(res.report())
    if args.json:
        out = Path(args.json)
        run = {"data": str(args.data), "cfg": str(args.cfg), "weights": str(args.weights), "iou": args.iou,
               "points": args.points, "thresh": args.thresh, "coco": args.coco}
        atomic_write(out, json.dumps({"run": run, **res.to_dict()}, indent=1) + "\n")
        atomic_write(markdown_path(out), f"`darknet-kd map {args.data} {args.cfg} {args.weights}`\n\n"
                     + res.to_markdown())
    return 0
