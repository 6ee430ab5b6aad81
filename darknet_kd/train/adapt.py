"""Source-free domain adaptation of a Darknet detector: ``darknet-kd adapt TARGET.data CFG
SOURCE_WEIGHTS --method {mt,lpld}``.

Input: only the source-trained weights and the *unlabelled* target images of the ``train=``
list (a list with label files is refused: the setting is source-free and label-free by
design; ``--allow-train-labels`` overrides, ignoring those labels, and breaks the setting's
guarantee).  The ``valid=`` list (labelled) serves model selection only (``_best.weights``).

Both methods are a mean teacher (LPLD's recipe, its code tools/train_main.py):

* the teacher starts as the source model and is an exponential moving average of the
  student, ``θ_t ← k·θ_t + (1 − k)·θ_s`` with keep rate k = 0.75 once per epoch as
  published (``--ema-every iter`` updates after every optimiser step, k = 0.999 by default);
  it runs in eval mode (batch-norm running statistics), without gradients;
* every image gives two views of the same geometry (:mod:`darknet_kd.data.strong_aug`):
  the teacher sees the weak one (Darknet's augmentation of the cfg), the student the
  strong one;
* ``mt``: the teacher's high-confidence detections (score > 0.7 after NMS) are the student's
  targets for the ordinary [yolo] loss;
* ``lpld``: plus the low-confidence pseudo-label distillation (:mod:`darknet_kd.loss.lpld`).

``--ignore-score S`` (off by default, not in the published recipe) is a YOLO-specific
guard: the student's [yolo] loss drops the no-object term at every anchor slot where the
teacher's score (objectness · max class prob, on the weak view) is ≥ S, as Darknet's
ignore_thresh does near truths.  Faster R-CNN samples its background RoIs; a YOLO loss
trains *every* slot without an HPL as background, so objects below the HPL threshold are
taught as background and objectness collapses (docs/results.md, the source-free section).

``--hpl-thresh auto`` (not in the published recipe either) replaces the fixed 0.7 by the score at
which the *source* model has its best F1 on the labelled ``valid=`` list, before any update: a
YOLO score is objectness × class probability, so its confident range sits far lower than a
Faster R-CNN softmax score.  This is model selection on the target's validation split, which the
setting allows; the choice is kept in the checkpoint and in ``<cfg>_summary.json``.

Optimisation as published: SGD with constant learning rate (``--learning-rate``, default the
cfg's; Darknet's update rule and momentum/decay of the cfg), ``--epochs`` 10 over the target
list.  The saved/evaluated model is the teacher (``--export student`` for the student).
Checkpoints, ``--resume`` (the teacher is part of the checkpoint), progress bar, chart and
DDP come from :class:`darknet_kd.train.trainer.Trainer`.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..data.darknet import label_path
from ..eval.evaluate import evaluate
from ..data.dataset import AugmentOptions, DarknetBatchSampler, collate, worker_init_fn
from ..data.strong_aug import PairDataset
from ..errors import DataError, DarknetKDError
from ..fileio import atomic_write
from ..loss.lpld import (LpldOptions, cell_log_probs, check_feature_layer, decode_heads, default_feature_layer,
                         feature_weight, hpl_targets, lpld_kl, mine_hpl, mine_lpl, roi_mean_pool)
from .trainer import ModelEMA, Trainer, TrainOptions, add_train_arguments, options_from_args, shutdown_distributed

METHODS = ("mt", "lpld")


@dataclass
class AdaptOptions:
    method: str = "lpld"
    epochs: float = 10.0                 # over the target train list (ignored with --max-batches)
    learning_rate: float | None = None   # constant rate; None: the cfg's learning_rate
    ema_every: str = "epoch"             # "epoch" (published) or "iter"
    ema_keep: float | None = None        # None: 0.75 per epoch, 0.999 per iteration
    feature_layer: int | None = None     # None: default_feature_layer(model)
    ignore_score: float | None = None    # ignore band: no background term where the teacher scores >= this
    hpl_auto: bool = False               # HPL threshold = the source model's best-F1 score on valid=
    export: str = "teacher"              # which model is saved and evaluated
    allow_train_labels: bool = False
    lpld: LpldOptions = field(default_factory=LpldOptions)

    def keep_rate(self) -> float:
        if self.ema_keep is not None:
            return self.ema_keep
        return 0.75 if self.ema_every == "epoch" else 0.999

    def check(self):
        if self.method not in METHODS:
            raise DarknetKDError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.ema_every not in ("epoch", "iter"):
            raise DarknetKDError(f"--ema-every must be 'epoch' or 'iter', not {self.ema_every!r}")
        if not 0.0 <= self.keep_rate() < 1.0:
            raise DarknetKDError(f"--ema-keep must be in [0, 1), got {self.keep_rate()}")
        if self.export not in ("teacher", "student"):
            raise DarknetKDError(f"--export must be 'teacher' or 'student', not {self.export!r}")
        if self.epochs <= 0:
            raise DarknetKDError(f"--epochs must be positive, got {self.epochs}")
        if self.ignore_score is not None and not 0.0 < self.ignore_score <= 1.0:
            raise DarknetKDError(f"--ignore-score must be in (0, 1], got {self.ignore_score}")
        self.lpld.check()
        return self


def check_unlabelled(data, allow: bool = False) -> list:
    """The target train images; a DataError when any has a label file that Darknet's
    label-path rule finds (unless ``allow``)."""
    images = data.images("train")
    if not images:
        raise DataError("the train= list is empty", data.resolve("train"))
    labelled = [p for p in images if label_path(p).exists()]
    if labelled and not allow:
        raise DataError(f"{len(labelled)} of {len(images)} target training images have label files "
                        f"(first: {label_path(labelled[0])}); source-free adaptation takes unlabelled "
                        "target images only -- is this the source .data? Pass --allow-train-labels to "
                        "run anyway (the labels are ignored; the run is no longer label-free)",
                        data.resolve("train"))
    return images


class AdaptTrainer(Trainer):
    """Mean-teacher / LPLD adaptation as a :class:`Trainer` (see the module docstring)."""

    def __init__(self, data_path, cfg_path, source_weights, opts: TrainOptions | None = None,
                 adapt: AdaptOptions | None = None):
        self.adapt = (adapt or AdaptOptions()).check()
        self.kind = f"adapt-{self.adapt.method}"
        opts = opts or TrainOptions()
        if not source_weights:
            raise DarknetKDError("adaptation needs the source model's weights")
        opts.clear = True  # the source's `seen` does not count: adaptation starts at iteration 0
        self.stats = {"images": 0, "hpl": 0, "lpl": 0, "proposals": 0, "teacher_updates": 0, "ignored": 0,
                      "det_loss": 0.0, "kd_loss": 0.0, "lpl_weight": 0.0}
        self.hpl_choice = None  # select_hpl_threshold's choice (--hpl-thresh auto; restored by --resume)
        super().__init__(data_path, cfg_path, source_weights, opts)
        if self.adapt.hpl_auto:
            if self.hpl_choice is None:  # a fresh run: the model is still the source model
                self.hpl_choice = select_hpl_threshold(self.model, self.data, workers=self.opts.workers,
                                                       progress=self.opts.progress and self.rank == 0)
            self.adapt.lpld.hpl_thresh = self.hpl_choice["thresh"]
            if self.rank == 0:
                print(f"HPL threshold {self.hpl_choice['thresh']:.4f}: the source model's best F1 "
                      f"({self.hpl_choice['f1']:.3f}) on {self.data.resolve('valid')}", flush=True)

    # -- setup ------------------------------------------------------------------------------------
    def _setup_training(self):
        a, net = self.adapt, self.model.net
        self.train_images = check_unlabelled(self.data, a.allow_train_labels)
        n = len(self.train_images)
        # An epoch = the list once; with DDP every rank draws its own batches (Darknet's ngpus).
        self.iters_per_epoch = max(1, round(n / (net.batch * self.world)))
        if not self.opts.max_batches:
            net.max_batches = max(1, math.ceil(a.epochs * self.iters_per_epoch))
        net.policy, net.burn_in = "constant", 0
        if a.learning_rate is not None:
            net.learning_rate = a.learning_rate
        super()._setup_training()
        self.teacher = ModelEMA(self.model, a.keep_rate())
        self.feature_layer = (check_feature_layer(self.model, a.feature_layer) if a.feature_layer is not None
                              else default_feature_layer(self.model))

    def make_loader(self):
        net = self.model.net
        mini = net.batch // net.subdivisions
        seed = self.opts.seed + 1000003 * self.rank
        opts = AugmentOptions.from_model(self.model)
        empty = [np.zeros((0, 5), np.float32)] * len(self.train_images)  # the target's labels are never read
        ds = PairDataset(self.train_images, self.data.classes, net.width, net.height, opts, labels=empty, seed=seed)
        sampler = DarknetBatchSampler(len(ds), mini, net.width, net.height, opts.random, opts.resize_step, seed,
                                      max_batches=net.max_batches, iteration=self.iteration * net.subdivisions)
        w = self.opts.workers
        return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=w,
                                           worker_init_fn=worker_init_fn, persistent_workers=w > 0,
                                           generator=torch.Generator().manual_seed(seed))

    # -- one mini-batch -----------------------------------------------------------------------------
    def compute_loss(self, images, targets, infos):
        """``images`` (B, 6, H, W): weak view (teacher) and strong view (student); ``targets``
        (the list's labels) are empty and unused."""
        weak, strong = images[:, :3].contiguous(), images[:, 3:].contiguous()
        net_hw = tuple(weak.shape[-2:])
        lpld = self.adapt.method == "lpld"
        keep = [self.feature_layer] if lpld else None
        teacher = self.teacher.model
        with torch.no_grad(), self.autocast():
            t_out = teacher(weak, keep=keep, raw=True)
        t_heads, t_feats = t_out if lpld else (t_out, None)
        decoded = decode_heads(teacher, [h.float() for h in t_heads], net_hw)
        hpl = mine_hpl(teacher, decoded, self.adapt.lpld.hpl_thresh)
        hpl_t = hpl_targets(hpl, net_hw).to(self.device)
        with self.autocast():
            s_out = self.train_model(strong, keep=keep)
        s_heads, s_feats = s_out if lpld else (s_out, None)
        s_heads = [h.float() for h in s_heads]
        ignore = ignore_band(teacher, t_heads, decoded, self.adapt.ignore_score)
        loss, parts = self.criterion(s_heads, hpl_t, net_hw, ignore=ignore)
        self.stats["images"] += weak.shape[0]
        if ignore is not None:
            self.stats["ignored"] += int(sum(int(m.sum()) for m in ignore))
        self.stats["hpl"] += len(hpl_t)
        self.stats["det_loss"] += float(loss.detach())
        if lpld:
            kd = self.lpld_loss(s_heads, s_feats[self.feature_layer], decoded, t_feats[self.feature_layer], hpl)
            loss = loss + kd
            parts = {**parts, "kd": float(kd.detach())}
            self.stats["kd_loss"] += parts["kd"]
        return loss, parts

    def lpld_loss(self, s_heads, s_feat, decoded, t_feat, hpl) -> torch.Tensor:
        """The LPLD term of a mini-batch, summed over its images (see loss/lpld.py)."""
        o = self.adapt.lpld
        obj_lp, obj_l1mp, cls_lp = cell_log_probs(self.model, s_heads)
        total = obj_lp.new_zeros(())
        for b, (boxes, _) in enumerate(hpl):
            if len(boxes) == 0:  # no HPL in the image: no LPLD (as published)
                continue
            m = mine_lpl(decoded[b], boxes, o)
            self.stats["proposals"] += len(m.proposals)
            idx = m.index
            if len(idx) == 0:
                continue
            self.stats["lpl"] += len(idx)
            rboxes = decoded[b, idx, :4]
            bi = torch.full((len(idx),), b, dtype=torch.long, device=rboxes.device)
            with torch.no_grad():
                w = feature_weight(roi_mean_pool(s_feat.detach().float(), bi, rboxes),
                                   roi_mean_pool(t_feat.float(), bi, rboxes))
            self.stats["lpl_weight"] += float(w.sum())
            kl = lpld_kl(obj_lp[b, idx], obj_l1mp[b, idx], cls_lp[b, idx], decoded[b, idx, 5:], w)
            total = total + o.weight * (kl / len(idx) if o.norm == "mean" else kl)
        return total

    # -- the teacher --------------------------------------------------------------------------------
    def after_update(self):
        """EMA of the student into the teacher: per epoch (at its last iteration) or per iteration."""
        done = self.iteration + 1  # optimiser steps taken, this one included
        if self.adapt.ema_every == "iter" or done % self.iters_per_epoch == 0:
            self._sync_buffers()
            self.teacher.update(self.model)
            self.stats["teacher_updates"] += 1

    def export_model(self):
        if self.adapt.export == "teacher":
            return self.teacher.model
        return super().export_model()

    def extra_state(self) -> dict:
        return {"teacher": self.teacher.model.state_dict(), "stats": dict(self.stats),
                "hpl_choice": dict(self.hpl_choice) if self.hpl_choice else None}

    def load_extra_state(self, state: dict) -> None:
        if "teacher" not in state:
            raise DarknetKDError("--resume: the checkpoint has no teacher (not an adaptation checkpoint)",
                                 self.ckpt_path)
        self.teacher.model.load_state_dict(state["teacher"])
        self.stats.update(state.get("stats", {}))
        self.hpl_choice = state.get("hpl_choice")

    def run(self) -> dict:
        summary = super().run()
        n = max(self.stats["images"], 1)
        summary.update({"method": self.adapt.method, "export": self.adapt.export,
                        "hpl_per_image": self.stats["hpl"] / n, "lpl_per_image": self.stats["lpl"] / n,
                        "teacher_updates": self.stats["teacher_updates"],
                        # how large the LPLD term is beside the detection loss (per image, as added
                        # to the loss) and the mean 1 - cos feature weight of an LPL
                        "det_loss_per_image": self.stats["det_loss"] / n,
                        "kd_loss_per_image": self.stats["kd_loss"] / n,
                        "lpl_mean_weight": self.stats["lpl_weight"] / max(self.stats["lpl"], 1),
                        "hpl_thresh": self.adapt.lpld.hpl_thresh, "hpl_choice": self.hpl_choice,
                        "adapt_options": asdict(self.adapt)})
        if self.rank == 0:
            atomic_write(self.backup / f"{self.stem}_summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def select_hpl_threshold(model, data, workers: int = 2, progress: bool = True) -> dict:
    """``--hpl-thresh auto``: the HPL threshold at which ``model`` (the source model) has its
    highest F1 on the labelled ``valid=`` list (all classes pooled, IoU > 0.5, Darknet's
    detections), as {"thresh", "f1", "f1_score_at"} (``thresh`` lies just below that score).
    Model selection on the target's validation split, which the setting allows; the published
    0.7 suits Faster R-CNN's softmax scores, not YOLO's objectness × class products."""
    if not data.valid or not data.images("valid"):
        raise DataError("--hpl-thresh auto needs a labelled valid= list", data.path)
    r = evaluate(model, data, key="valid", workers=workers, progress=progress).darknet
    if not math.isfinite(r.best_thresh):
        raise DarknetKDError("--hpl-thresh auto: the source model has no true positive on valid=; "
                             "give --hpl-thresh a number", data.resolve("valid"))
    # HPL keep scores strictly above the threshold: step just below the chosen score
    return {"thresh": float(np.nextafter(np.float32(r.best_thresh), np.float32(0))), "f1": r.best_f1,
            "f1_score_at": r.best_thresh}


def ignore_band(model, heads, decoded: torch.Tensor, score: float | None):
    """The ignore band of a batch: per [yolo] layer of ``model`` (raw ``heads`` (B, A·(5+C),
    H, W)) a (B, A, H, W) bool mask of the slots whose teacher score obj · max class prob
    (``decoded`` rows (B, N, 5+C), the layers' slots in order) is ≥ ``score``; None when
    ``score`` is None."""
    if score is None:
        return None
    s = decoded[..., 4] * decoded[..., 5:].max(-1).values
    masks, start = [], 0
    for layer, h in zip(model.yolo_layers, heads):
        shape = (s.shape[0], len(layer.mask), h.shape[-2], h.shape[-1])
        n = shape[1] * shape[2] * shape[3]
        masks.append((s[:, start:start + n] >= score).view(shape))
        start += n
    if start != s.shape[1]:
        raise DarknetKDError(f"ignore_band: {s.shape[1]} decoded rows for {start} [yolo] slots")
    return masks


# ---------------------------------------------------------------------------------- audit

SEEN_SCORES = (0.01, 0.1)


def audit_pseudo_labels(model, images, truths, opts: LpldOptions | None = None, iou: float = 0.5,
                        batch_size: int = 8, workers: int = 0, device=None, progress: bool = True) -> dict:
    """What a teacher's pseudo-labels hold, against labels the adaptation never sees (DriveSim's
    ``D-unlabelled-audit`` list): images without augmentation, HPL and LPL mined as in one
    adaptation step (:func:`darknet_kd.loss.lpld.teacher_pseudo_labels`).  A pseudo-label *hits*
    a truth when their IoU ≥ ``iou`` and the classes agree (LPL: the teacher's argmax class).

    Returns counts and ratios: ``truths``; ``hpl``, ``hpl_precision``, ``hpl_recall``;
    ``lpl``, ``lpl_precision``; ``recovered`` = truths that no HPL hits but an LPL does (the
    objects LPLD distils that the detection loss treats as background) and
    ``recovered_share`` = recovered / truths missed by HPL; ``seen`` {score: share of the truths
    that some pre-NMS slot with score obj · max prob ≥ score covers at IoU ≥ ``iou``, any
    class} -- the most any pseudo-labelling (or an ignore band at that score) can reach."""
    from ..data.dataset import EvalDataset, to_original_boxes
    from ..box import pairwise_iou
    from ..loss.lpld import teacher_pseudo_labels

    opts = opts or LpldOptions()
    net = model.net
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ds = EvalDataset(images, model.num_classes, net.width, net.height, bool(net.letter_box), labels=truths)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    c = dict.fromkeys(("images", "truths", "hpl", "hpl_hits", "truths_hpl", "lpl", "lpl_hits", "recovered"), 0)
    seen = dict.fromkeys(SEEN_SCORES, 0)
    was_training = model.training
    model.eval()
    try:
        for x, _, infos in tqdm(loader, desc="audit", unit="batch", disable=not progress):
            net_h, net_w = x.shape[-2:]
            for info, r in zip(infos, teacher_pseudo_labels(model, x.to(device), opts)):
                ow, oh = info["orig_size"]
                t = torch.as_tensor(info["labels"], dtype=torch.float32).reshape(-1, 5)

                def hits(boxes, cls):
                    boxes = to_original_boxes(boxes.float().cpu(), ow, oh, net_w, net_h, bool(net.letter_box))
                    m = (pairwise_iou(t[:, 1:], boxes) >= iou) & (t[:, :1].long() == cls.cpu()[None, :])
                    return m.any(1), m.any(0)

                boxes, score = r["rows"]
                covered = pairwise_iou(t[:, 1:], to_original_boxes(boxes.float().cpu(), ow, oh, net_w, net_h,
                                                                    bool(net.letter_box))) >= iou
                for s in SEEN_SCORES:
                    seen[s] += int((covered & (score.cpu() >= s)[None, :]).any(1).sum())
                t_hpl, p_hpl = hits(*r["hpl"])
                t_lpl, p_lpl = hits(*r["lpl"])
                c["images"] += 1
                c["truths"] += len(t)
                c["hpl"] += len(p_hpl)
                c["hpl_hits"] += int(p_hpl.sum())
                c["truths_hpl"] += int(t_hpl.sum())
                c["lpl"] += len(p_lpl)
                c["lpl_hits"] += int(p_lpl.sum())
                c["recovered"] += int((t_lpl & ~t_hpl).sum())
    finally:
        model.train(was_training)
    ratio = lambda a, b: a / b if b else 0.0
    c.update(hpl_precision=ratio(c["hpl_hits"], c["hpl"]), hpl_recall=ratio(c["truths_hpl"], c["truths"]),
             lpl_precision=ratio(c["lpl_hits"], c["lpl"]),
             recovered_share=ratio(c["recovered"], c["truths"] - c["truths_hpl"]),
             seen={str(s): ratio(n, c["truths"]) for s, n in seen.items()})
    return c


# ---------------------------------------------------------------------------------- command

def add_parser(sub):
    p = sub.add_parser("adapt", help="source-free adaptation: mean teacher (mt) or LPLD on unlabelled target images",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="target .data: train= unlabelled target images, valid= labelled (model selection)")
    p.add_argument("cfg")
    p.add_argument("weights", help="the source-trained .weights")
    p.add_argument("--method", choices=METHODS, default="lpld")
    p.add_argument("--epochs", type=float, default=10.0, help="epochs over the target list (default 10)")
    p.add_argument("--learning-rate", type=float, help="constant learning rate (default: the cfg's)")
    p.add_argument("--ema-every", choices=("epoch", "iter"), default="epoch",
                   help="teacher EMA once per epoch (published) or after every update")
    p.add_argument("--ema-keep", type=float, help="EMA keep rate (default 0.75 per epoch, 0.999 per iteration)")
    p.add_argument("--hpl-thresh", type=_thresh, default=0.7, help="teacher score for a pseudo-label (default "
                   "0.7), or 'auto': the source model's best-F1 score on the valid= list")
    p.add_argument("--top-k", type=int, default=300, help="LPLD proposals per image (default 300)")
    p.add_argument("--lpld-weight", type=float, default=0.1, help="LPLD loss weight (default 0.1)")
    p.add_argument("--lpl-min-obj", type=_fraction, help="LPL class-relation filter: teacher objectness >= "
                   "this, i.e. background 1 - obj <= 1 - this (default 0.01: the published background <= 0.99)")
    p.add_argument("--lpld-norm", choices=("mean", "sum"), default="mean",
                   help="LPLD per image: mean over its LPL (published) or sum")
    p.add_argument("--feature-layer", type=int, help="layer whose output LPLD pools (default: the input of the "
                   "finest [yolo] layer's output convolution)")
    p.add_argument("--ignore-score", type=float, help="YOLO ignore band (off by default): no background "
                   "objectness loss where the teacher's score obj*class is >= this")
    p.add_argument("--export", choices=("teacher", "student"), default="teacher",
                   help="the model saved as .weights and evaluated (default teacher)")
    p.add_argument("--allow-train-labels", action="store_true",
                   help="run although the target train list has label files (they are ignored); "
                   "breaks the source-free, label-free setting")
    add_train_arguments(p)
    p.set_defaults(func=run_command)


def _fraction(text: str, what: str = "a number") -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _thresh(text: str):
    return text if text == "auto" else _fraction(text, "a number or 'auto'")


def adapt_options_from_args(args) -> AdaptOptions:
    auto = args.hpl_thresh == "auto"
    lp = LpldOptions(hpl_thresh=0.7 if auto else args.hpl_thresh, top_k=args.top_k, weight=args.lpld_weight,
                     norm=args.lpld_norm)
    if args.lpl_min_obj is not None:
        lp.bg_max = 1.0 - args.lpl_min_obj
    return AdaptOptions(method=args.method, epochs=args.epochs, learning_rate=args.learning_rate,
                        ema_every=args.ema_every, ema_keep=args.ema_keep, feature_layer=args.feature_layer,
                        ignore_score=args.ignore_score, hpl_auto=auto,
                        export=args.export, allow_train_labels=args.allow_train_labels, lpld=lp)


def run_command(args):
    summary = AdaptTrainer(args.data, args.cfg, args.weights, options_from_args(args),
                           adapt_options_from_args(args)).run()
    print(json.dumps(summary, indent=2))
    shutdown_distributed()
    return 0
