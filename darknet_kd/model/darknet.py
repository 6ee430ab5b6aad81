"""The Darknet network as a torch.nn.Module, built from a parsed .cfg."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..cfg import Cfg, Section, parse_cfg
from . import layers as L
from .weights import load_weights, save_weights


@dataclass
class NetOptions:
    """[net]: input size and the training options, kept for the trainer (parser.c:parse_net_options)."""

    batch: int = 1
    subdivisions: int = 1
    width: int = 416
    height: int = 416
    channels: int = 3
    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0001
    burn_in: int = 0
    power: float = 4.0
    max_batches: int = 0
    policy: str = "constant"
    steps: list[int] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    step: int = 1
    scale: float = 1.0
    gamma: float = 1.0
    angle: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    flip: int = 1
    mosaic: int = 0
    letter_box: int = 0
    blur: int = 0
    mixup: int = 0
    label_smooth_eps: float = 0.0
    resize_step: int = 32
    ema_alpha: float = 0.0

    @classmethod
    def from_section(cls, sec: Section) -> "NetOptions":
        o = cls()
        for name, f in cls.__dataclass_fields__.items():
            default = getattr(o, name)
            if isinstance(default, list):
                v = (sec.get_floats if name == "scales" else sec.get_ints)(name, default)
            elif isinstance(default, str):
                v = sec.get_str(name, default)
            elif isinstance(default, float):
                v = sec.get_float(name, default)
            else:
                v = sec.get_int(name, default) if name != "resize_step" else int(sec.get_float(name, default))
            setattr(o, name, v)
        # Keys Darknet reads that change nothing here.
        sec.mark_used("learning_rate_min", "sgdr_cycle", "sgdr_mult", "track", "augment_speed",
                      "sequential_subdivisions", "try_fix_nan", "weights_reject_freq", "equidistant_point",
                      "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "use_cuda_graph",
                      "loss_scale", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB",
                      "adam", "B1", "B2", "eps", "inputs", "gaussian_noise", "cutmix", "mosaic_bound",
                      "contrastive", "contrastive_jit_flip", "contrastive_color", "unsupervised",
                      "attention", "adversarial_lr", "max_chart_loss", "aspect", "seq_scales", "time_steps",
                      "max_crop", "min_crop", "center", "stream", "wait_stream", "notruth", "random",
                      "train_only_bn", "rotate", "max_batches")
        if not (1 <= o.width <= 16384 and 1 <= o.height <= 16384 and 1 <= o.channels <= 4096):
            raise sec.error(f"width={o.width} height={o.height} channels={o.channels} must be positive "
                            "(and at most 16384 x 16384 x 4096)")
        if o.batch < 1 or o.subdivisions < 1:
            raise sec.error(f"batch={o.batch} and subdivisions={o.subdivisions} must be positive")
        if o.policy == "steps" and len(o.steps) != len(o.scales):
            raise sec.error(f"steps has {len(o.steps)} values, scales has {len(o.scales)}", "scales")
        return o


class Darknet(nn.Module):
    """A Darknet network.

    ``forward(x)`` in training mode (or with ``raw=True``) returns the list of raw [yolo]
    inputs (B, A*(5+C), H, W); in eval mode a tensor (B, N, 5+C) of decoded predictions
    from all [yolo] layers (see :class:`layers.Yolo`).  ``forward(x, keep=[i, j])``
    returns ``(output, {i: out_i, j: out_j})`` for any layer indices (distillation).
    """

    def __init__(self, cfg: Cfg, width: int | None = None, height: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.path = cfg.path
        self.net = NetOptions.from_section(cfg.net)
        if width:
            self.net.width = width
        if height:
            self.net.height = height
        shape = L.Shape(self.net.channels, self.net.height, self.net.width)
        shapes: list[L.Shape] = []
        mods = []
        for sec in cfg.layers:
            i = sec.index
            if sec.name == "convolutional":
                m = L.Convolutional(i, shape, sec)
            elif sec.name == "maxpool":
                m = L.MaxPool(i, shape, sec)
            elif sec.name == "route":
                m = L.Route(i, shape, sec, shapes)
            elif sec.name == "shortcut":
                m = L.Shortcut(i, shape, sec, shapes)
            elif sec.name == "upsample":
                m = L.Upsample(i, shape, sec)
            elif sec.name == "dropout":
                m = L.Dropout(i, shape, sec)
            elif sec.name == "avgpool":
                m = L.AvgPool(i, shape, sec)
            elif sec.name == "yolo":
                m = L.Yolo(i, shape, sec, self.net.width, self.net.height)
            else:  # pragma: no cover - the parser rejects other sections
                raise sec.error("unsupported section")
            mods.append(m)
            shapes.append(m.out_shape)
            shape = m.out_shape
        self.layers = nn.ModuleList(mods)
        self.yolo_layers = [m for m in mods if isinstance(m, L.Yolo)]
        if not self.yolo_layers:
            raise cfg.layers[-1].error("the network has no [yolo] layer: not a detector")
        classes = {y.classes for y in self.yolo_layers}
        if len(classes) != 1:
            raise cfg.layers[self.yolo_layers[-1].index].error(
                f"[yolo] layers disagree on classes: {sorted(classes)}", "classes")
        self.num_classes = classes.pop()
        # Which outputs must be kept during forward (routes, shortcuts, yolo inputs).
        need = set()
        for m in mods:
            if isinstance(m, L.Route):
                need.update(m.sources)
            elif isinstance(m, L.Shortcut):
                need.add(m.source)
        self._keep = need
        self.seen = 0  # images seen, stored in the .weights header
        self.header = (0, 2, 5)
        cfg.warn_unused()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_cfg(cls, path, width: int | None = None, height: int | None = None) -> "Darknet":
        return cls(parse_cfg(path), width, height)

    def load_weights(self, path, cutoff: int | None = None) -> int:
        """Load Darknet .weights; returns the number of layers loaded (see weights.py)."""
        return load_weights(self, path, cutoff)

    def save_weights(self, path, cutoff: int | None = None) -> None:
        save_weights(self, path, cutoff)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, keep=None, raw: bool | None = None):
        """``raw`` (default: ``self.training``) returns the raw [yolo] inputs instead of decoded rows."""
        raw = self.training if raw is None else raw
        keep = set(keep or ())
        outputs: dict[int, torch.Tensor] = {}
        heads = []
        net_hw = (x.shape[-2], x.shape[-1])
        for m in self.layers:
            i = m.index
            if isinstance(m, L.Route):
                x = m(outputs)
            elif isinstance(m, L.Shortcut):
                x = m(x, outputs)
            elif isinstance(m, L.Yolo):
                heads.append(x if raw else m.decode(x, net_hw))
            else:
                x = m(x)
            if i in self._keep or i in keep:
                outputs[i] = x
        out = heads if raw else torch.cat(heads, 1)
        if keep:
            return out, {i: outputs[i] for i in sorted(keep)}
        return out

    # -- description --------------------------------------------------------------------
    @property
    def bflops(self) -> float:
        return sum(m.bflops for m in self.layers)

    def layer_table(self) -> str:
        rows = ["   layer   filters  size/strd(dil)      input                output"]
        for m in self.layers:
            bf = f" {m.bflops:5.3f} BF" if m.bflops > 0 else ""
            if isinstance(m, (L.Convolutional, L.MaxPool, L.AvgPool)):
                rows.append(f"{m.index:4d} {m.kind:<8s}{m.describe():<22s}{m.in_shape} -> {m.out_shape}{bf}")
            elif isinstance(m, L.Upsample):
                rows.append(f"{m.index:4d} {m.kind:<8s}{m.describe():<22s}{m.in_shape} -> {m.out_shape}")
            elif isinstance(m, L.Route):
                rows.append(f"{m.index:4d} {m.kind:<8s}{m.describe():<22s}{'':20s}-> {m.out_shape}")
            elif isinstance(m, L.Shortcut):
                rows.append(f"{m.index:4d} {m.describe():<30s}{'':12s}  wt = 0, wn = 0, outputs: {m.out_shape}{bf}")
            else:
                rows.append(f"{m.index:4d} {m.kind:<8s}{m.describe()}")
        rows.append(f"Total BFLOPS {self.bflops:5.3f}")
        return "\n".join(rows)


def load(cfg, weights=None, width: int | None = None, height: int | None = None) -> Darknet:
    """Build a network from a .cfg and (optionally) load .weights; returns it in eval mode."""
    model = Darknet.from_cfg(cfg, width, height)
    if weights is not None:
        model.load_weights(weights)
    return model.eval()
