"""Teacher-student distillation: ``darknet-kd distill DATA STUDENT_CFG TEACHER_CFG TEACHER_WEIGHTS``.

A :class:`~darknet_kd.train.trainer.Trainer` (same schedule, SGD rule, subdivisions,
checkpoints, exact resume, EMA, progress bar, chart, DDP) whose loss is Darknet's [yolo]
loss on the student plus ``--kd-weight`` × a distillation loss from a frozen teacher that
runs, in eval mode and without gradients, on the *same augmented batch*:

=========  ==============================================================================
--kd       what is distilled (darknet_kd/loss/)
=========  ==============================================================================
none       nothing (the teacher is not loaded): `train` under this command's name
fitnet     neck features, 1×1 conv + BN adapters, MSE (fitnet.py)
fgd        neck features, focal (GT masks, teacher attention) + global (GcBlock) (fgd.py)
ld         box-edge distributions of an auxiliary DFL branch + class KD on positives (ld.py)
crosskd    student neck → frozen teacher head vs teacher head, quality-focal BCE (crosskd.py)
=========  ==============================================================================

Hook layers (``--student-layers`` / ``--teacher-layers``, Darknet layer indices) default
to the input of each [yolo] head conv (layer ``yolo − 2``: the neck outputs that feed the
heads) — for cfg/yolov4-tiny-drivesim.cfg layers 28 (stride 32) and 35 (stride 16), for
cfg/yolov4-tiny-3l-teacher-drivesim.cfg 28, 35 and 42.  Without ``--teacher-layers`` each
student hook is paired with the teacher hook of the same spatial size.  LD also pairs the
[yolo] layers of each stride; they must have the same masked anchors (the shipped teacher
uses the student's anchors).

What is saved: the student alone, as plain Darknet ``.weights`` (adapters, GcBlocks and
distribution branches live in the checkpoint only, for ``--resume``).
"""
from __future__ import annotations

import json

import torch
from tqdm import tqdm

from ..errors import CheckpointError, DarknetKDError
from ..model import Darknet
from ..model.layers import Yolo
from .trainer import Trainer, TrainOptions, add_train_arguments, options_from_args, shutdown_distributed

KD_METHODS = ("none", "fitnet", "fgd", "ld", "crosskd")


def default_hooks(model: Darknet) -> list[int]:
    """The input layer of each [yolo] head conv (``yolo.index − 2``), in [yolo] order."""
    return [y.index - 2 for y in model.yolo_layers]


def _hw(model: Darknet, index: int) -> tuple[int, int]:
    if not 0 <= index < len(model.layers):
        raise DarknetKDError(f"hook layer {index} is outside layers 0..{len(model.layers) - 1} of {model.path}")
    if isinstance(model.layers[index], Yolo):
        raise DarknetKDError(f"hook layer {index} of {model.path} is a [yolo] layer: pick a feature layer")
    s = model.layers[index].out_shape
    return s.h, s.w


def pair_hooks(student: Darknet, teacher: Darknet, s_layers=None, t_layers=None):
    """(student hooks, teacher hooks), paired by position; teacher hooks default to the
    teacher's default hook of the same spatial size as each student hook."""
    s_layers = list(s_layers) if s_layers else default_hooks(student)
    for i in s_layers:
        _hw(student, i)
    if t_layers:
        t_layers = list(t_layers)
        if len(t_layers) != len(s_layers):
            raise DarknetKDError(f"--teacher-layers has {len(t_layers)} layers, --student-layers {len(s_layers)}")
        for i, j in zip(s_layers, t_layers):
            if _hw(student, i) != _hw(teacher, j):
                raise DarknetKDError(f"student layer {i} is {_hw(student, i)} (h, w) but teacher layer {j} is "
                                     f"{_hw(teacher, j)}: pair layers of the same stride")
        return s_layers, t_layers
    by_size = {}
    for j in default_hooks(teacher):
        by_size.setdefault(_hw(teacher, j), j)
    out = []
    for i in s_layers:
        j = by_size.get(_hw(student, i))
        if j is None:
            raise DarknetKDError(f"no teacher head feature has the size {_hw(student, i)} of student layer {i}; "
                                 f"the teacher's head inputs are {sorted(by_size.items())}: pass --teacher-layers")
        out.append(j)
    return s_layers, out


def yolo_of_size(model: Darknet, hw) -> tuple[int, Yolo] | None:
    for k, y in enumerate(model.yolo_layers):
        if (y.in_shape.h, y.in_shape.w) == tuple(hw):
            return k, y
    return None


def ld_levels(student, teacher, s_layers, t_layers) -> list[dict]:
    """LD: the student's and teacher's [yolo] layers at each hook's stride, same anchors."""
    levels = []
    for i, j in zip(s_layers, t_layers):
        hw = _hw(student, i)
        s, t = yolo_of_size(student, hw), yolo_of_size(teacher, hw)
        if s is None or t is None:
            raise DarknetKDError(f"ld: hook layers {i}/{j} ({hw[0]}x{hw[1]}) have no [yolo] layer of that size in "
                                 f"{'the student' if s is None else 'the teacher'}")
        (sk, sy), (tk, ty) = s, t
        s_anchors = [sy.anchors[m] for m in sy.mask]
        t_anchors = [ty.anchors[m] for m in ty.mask]
        if s_anchors != t_anchors or sy.classes != ty.classes:
            raise DarknetKDError(f"ld: student [yolo] layer {sy.index} and teacher [yolo] layer {ty.index} differ "
                                 f"(anchors {s_anchors} vs {t_anchors}, classes {sy.classes} vs {ty.classes}); "
                                 "LD compares their predictions anchor by anchor")
        levels.append({"s_layer": sy, "s_head": sk, "t_layer": ty, "t_head": tk})
    return levels


def crosskd_levels(teacher, t_layers) -> list[dict]:
    from ..loss.crosskd import teacher_head_chain

    levels = []
    for j in t_layers:
        found = next(((k, y) for k, y in enumerate(teacher.yolo_layers) if y.index > j), None)
        if found is None:
            raise DarknetKDError(f"crosskd: no teacher [yolo] layer after hook layer {j}")
        k, y = found
        levels.append({"t_layer": y, "t_head": k, "chain": teacher_head_chain(teacher, j, y)})
    return levels


def build_kd_loss(kd: str, student, teacher, s_layers, t_layers, reg_max: int = 16):
    """The distillation module for ``kd`` (an nn.Module whose forward takes keyword
    arguments s_feats, t_feats, s_heads, t_heads, targets, net_hw)."""
    s_ch = [student.layers[i].out_shape.c for i in s_layers]
    t_ch = [teacher.layers[j].out_shape.c for j in t_layers]
    if kd == "fitnet":
        from ..loss.fitnet import FitNetLoss
        return FitNetLoss(s_ch, t_ch)
    if kd == "fgd":
        from ..loss.fgd import FGDLoss
        return FGDLoss(s_ch, t_ch)
    if kd == "ld":
        from ..loss.ld import LDLoss
        return LDLoss(s_ch, t_ch, ld_levels(student, teacher, s_layers, t_layers), reg_max=reg_max)
    if kd == "crosskd":
        from ..loss.crosskd import CrossKDLoss
        return CrossKDLoss(s_ch, t_ch, crosskd_levels(teacher, t_layers))
    raise DarknetKDError(f"--kd {kd!r} is not one of {', '.join(KD_METHODS)}")


class Distiller(Trainer):
    """``Distiller(data, student_cfg, teacher_cfg, teacher_weights, weights, opts, kd=...).run()``."""

    kind = "distill"

    def __init__(self, data_path, cfg_path, teacher_cfg, teacher_weights, weights=None,
                 opts: TrainOptions | None = None, kd: str = "crosskd", kd_weight: float = 1.0,
                 student_layers=None, teacher_layers=None, reg_max: int = 16, ld_teacher_iters: int = 200):
        if kd not in KD_METHODS:
            raise DarknetKDError(f"--kd {kd!r} is not one of {', '.join(KD_METHODS)}")
        if kd_weight < 0:
            raise DarknetKDError(f"--kd-weight {kd_weight} must be >= 0")
        self.kd, self.kd_weight, self.reg_max = kd, float(kd_weight), int(reg_max)
        self.teacher_cfg, self.teacher_weights = teacher_cfg, teacher_weights
        self._layers_arg = (student_layers, teacher_layers)
        self.ld_teacher_iters = int(ld_teacher_iters)
        self.ld_fitted = False
        super().__init__(data_path, cfg_path, weights, opts)

    # -- setup -----------------------------------------------------------------------------------------
    def _setup_training(self):
        super()._setup_training()
        self.teacher = None
        self.kd_loss = None
        if self.kd == "none":
            return
        teacher = Darknet.from_cfg(self.teacher_cfg)
        if teacher.num_classes != self.model.num_classes:
            raise DarknetKDError(f"the teacher has classes={teacher.num_classes}, the student "
                                 f"classes={self.model.num_classes}", self.teacher_cfg)
        teacher.load_weights(self.teacher_weights)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.to(self.device)
        self.s_layers, self.t_layers = pair_hooks(self.model, teacher, *self._layers_arg)
        self.kd_loss = build_kd_loss(self.kd, self.model, teacher, self.s_layers, self.t_layers,
                                     self.reg_max).to(self.device)
        params = (self.kd_loss.student_parameters() if hasattr(self.kd_loss, "student_parameters")
                  else list(self.kd_loss.parameters()))
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        net = self.model.net
        for group, wd in ((decay, net.decay), (no_decay, 0.0)):
            if group:
                self.optimizer.add_param_group({"params": group, "weight_decay": wd, "lr": net.learning_rate})
        self.kd_train = self.kd_loss
        if self.world > 1 and params:
            self.kd_train = torch.nn.parallel.DistributedDataParallel(
                self.kd_loss, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    def signature(self) -> dict:
        """What a resumed run must share with the checkpoint."""
        return {"kd": self.kd, "kd_weight": self.kd_weight, "reg_max": self.reg_max,
                "teacher_cfg": None if self.teacher is None else self.teacher.cfg.to_text(),
                "student_layers": getattr(self, "s_layers", None), "teacher_layers": getattr(self, "t_layers", None)}

    def extra_state(self) -> dict:
        state = {"signature": json.dumps(self.signature(), sort_keys=True), "ld_fitted": self.ld_fitted}
        if self.kd_loss is not None:
            state["kd_loss"] = self.kd_loss.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        mine = json.dumps(self.signature(), sort_keys=True)
        if state.get("signature") != mine:
            raise CheckpointError("--resume: the checkpoint was made with other distillation settings "
                                  f"(--kd, --kd-weight, teacher cfg or hook layers): {state.get('signature')}",
                                  self.ckpt_path)
        if self.kd_loss is not None:
            self.kd_loss.load_state_dict(state["kd_loss"])
        self.ld_fitted = bool(state.get("ld_fitted", False))

    # -- the loss ---------------------------------------------------------------------------------------
    def compute_loss(self, images, targets, infos):
        if self.kd_loss is None:
            return super().compute_loss(images, targets, infos)
        net_hw = tuple(images.shape[-2:])
        with self.autocast():
            heads, s_feats = self.train_model(images, keep=self.s_layers)
            with torch.no_grad():
                t_heads, t_feats = self.teacher(images, keep=self.t_layers, raw=True)
        heads = [h.float() for h in heads]
        t_heads = [h.float() for h in t_heads]
        loss, parts = self.criterion(heads, targets, net_hw)
        kd, kd_parts = self.kd_train(s_feats=[s_feats[i].float() for i in self.s_layers],
                                     t_feats=[t_feats[j].float() for j in self.t_layers],
                                     s_heads=heads, t_heads=t_heads, targets=targets, net_hw=net_hw)
        parts = dict(parts)
        for k, v in kd_parts.items():
            parts[f"kd_{k}"] = v * self.kd_weight
        parts["kd"] = kd.detach() * self.kd_weight
        return loss + self.kd_weight * kd, parts

    # -- LD: fit the teacher's distribution branch first -------------------------------------------------
    def fit_ld_teacher(self) -> float:
        """Train only the teacher's DFL branch (teacher frozen) for ``ld_teacher_iters`` batches
        of the training data; returns the last mean DFL per positive."""
        from ..data.dataset import train_loader

        mini = self.model.net.batch // self.model.net.subdivisions
        loader = train_loader(self.data, self.model, mini, workers=self.opts.workers, seed=self.opts.seed + 7)
        params = list(self.kd_loss.t_dist.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        it, last = 0, float("nan")
        bar = tqdm(total=self.ld_teacher_iters, desc="ld teacher branch", unit="it", dynamic_ncols=True,
                   disable=not self.opts.progress or self.rank != 0)
        while it < self.ld_teacher_iters:
            for images, targets, _ in loader:
                images, targets = images.to(self.device), targets.to(self.device)
                with torch.no_grad():
                    _, feats = self.teacher(images, keep=self.t_layers, raw=True)
                loss = self.kd_loss.teacher_fit_loss([feats[j].float() for j in self.t_layers], targets,
                                                     tuple(images.shape[-2:]))
                opt.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    (loss / max(len(targets), 1)).backward()
                    opt.step()
                last = loss.item() / max(len(targets), 1)
                it += 1
                bar.set_postfix(dfl=f"{last:.3f}", refresh=False)
                bar.update(1)
                if it >= self.ld_teacher_iters:
                    break
        bar.close()
        self.ld_fitted = True
        return last

    def run(self) -> dict:
        if self.kd == "ld" and not self.ld_fitted and self.ld_teacher_iters > 0:
            self.fit_ld_teacher()
        summary = super().run()
        summary["kd"] = self.kd
        return summary


# ---------------------------------------------------------------- command

def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DarknetKDError(f"expected comma-separated layer indices, got {text!r}") from None


def add_parser(sub):
    p = sub.add_parser("distill", help="train a student with a frozen teacher (FitNets, FGD, LD, CrossKD)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("cfg", metavar="STUDENT_CFG")
    p.add_argument("teacher_cfg", metavar="TEACHER_CFG")
    p.add_argument("teacher_weights", metavar="TEACHER_WEIGHTS")
    p.add_argument("--weights", help="initial student .weights (default: random initialisation)")
    p.add_argument("--kd", choices=KD_METHODS, default="crosskd", help="distillation loss (default crosskd)")
    p.add_argument("--kd-weight", type=float, default=1.0, help="multiplier of the distillation loss")
    p.add_argument("--student-layers", type=str, default=None,
                   help="student hook layers, e.g. 28,35 (default: the input of each [yolo] head conv)")
    p.add_argument("--teacher-layers", type=str, default=None,
                   help="teacher hook layers, paired with --student-layers (default: same spatial size)")
    p.add_argument("--reg-max", type=int, default=16, help="LD: bins per box edge minus one (GFL reg_max)")
    p.add_argument("--ld-teacher-iters", type=int, default=200,
                   help="LD: batches to fit the teacher's distribution branch before distilling")
    add_train_arguments(p)
    p.set_defaults(func=run_command)


def run_command(args):
    d = Distiller(args.data, args.cfg, args.teacher_cfg, args.teacher_weights, args.weights, options_from_args(args),
                  kd=args.kd, kd_weight=args.kd_weight,
                  student_layers=_ints(args.student_layers) if args.student_layers else None,
                  teacher_layers=_ints(args.teacher_layers) if args.teacher_layers else None,
                  reg_max=args.reg_max, ld_teacher_iters=args.ld_teacher_iters)
    print(json.dumps(d.run(), indent=2))
    shutdown_distributed()
    return 0
