"""Darknet layers as torch modules, each computing exactly what Darknet computes.

Every layer knows its Darknet index, its input and output shape (C, H, W), its
BFLOPs as Darknet counts them, and a one-line description for the layer table.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cfg import Section


# -- activations (src/activations.c) -------------------------------------------------
def _mish(x):
    # Darknet: x * tanh(softplus(x)), softplus with thresholds 20 / -20.
    sp = torch.where(x > 20, x, torch.where(x < -20, torch.exp(x), torch.log1p(torch.exp(x))))
    return x * torch.tanh(sp)


def _hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATIONS = {
    "linear": lambda x: x,
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "relu": F.relu,
    "relu6": lambda x: torch.clamp(x, 0, 6),
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "mish": _mish,
    "hard_mish": _hard_mish,
    "swish": lambda x: x * torch.sigmoid(x),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x ** 3)),
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": lambda x: torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x)),
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
}


def activation(sec: Section, default: str):
    name = sec.get_str("activation", default)
    if name not in ACTIVATIONS:
        raise sec.error(f"unknown activation {name!r} (Darknet would silently use relu)", "activation")
    return name


MAX_WEIGHTS = 1 << 28  # a single conv above this (1 GiB of fp32) is a typo, not a network


@dataclass
class Shape:
    c: int
    h: int
    w: int

    def __str__(self):
        return f"{self.w:4d} x{self.h:4d} x{self.c:4d}"


class DarknetLayer(nn.Module):
    """Base: index, in/out shape, bflops, describe()."""

    kind = "?"

    def __init__(self, index: int, in_shape: Shape):
        super().__init__()
        self.index = index
        self.in_shape = in_shape
        self.out_shape = in_shape
        self.bflops = 0.0

    def describe(self) -> str:  # the middle column of Darknet's layer table
        return ""


class DarknetBatchNorm(nn.BatchNorm2d):
    """Darknet's batch norm: y = scale * (x - mean) / sqrt(var + 1e-5) + bias.

    Inference is PyTorch's formula with Darknet's eps.  In training Darknet
    normalises with the unbiased variance (1/(N-1), blas.c:variance_cpu), where
    PyTorch uses the biased one; we follow Darknet.  The rolling statistics use
    ``momentum``, the fraction of the new batch statistics (Darknet's CPU build 0.1,
    its GPU build 0.01); a trainer may change it.
    """

    def __init__(self, n: int):
        super().__init__(n, eps=1e-5, momentum=0.1)

    def forward(self, x):
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        # (x - m) / sqrt(var_unbiased + eps) == k^-1/2 (x - m) / sqrt(var_biased + eps/k), k = N/(N-1):
        # PyTorch's fused kernel with a rescaled weight and eps gives Darknet's arithmetic.
        n = x.numel() // x.shape[1]
        k = n / (n - 1) if n > 1 else 1.0
        self.num_batches_tracked += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * k ** -0.5, self.bias,
                            True, self.momentum, self.eps / k)


class Convolutional(DarknetLayer):
    kind = "conv"

    def __init__(self, index, in_shape: Shape, sec: Section):
        super().__init__(index, in_shape)
        n = sec.get_int("filters", 1)
        size = sec.get_int("size", 1)
        stride = sec.get_int("stride", 1)
        stride_x = sec.get_int("stride_x", -1)
        stride_y = sec.get_int("stride_y", -1)
        sx = stride_x if stride_x >= 1 else stride
        sy = stride_y if stride_y >= 1 else stride
        dilation = sec.get_int("dilation", 1)
        pad = sec.get_int("pad", 0)
        padding = sec.get_int("padding", 0)
        if pad:
            padding = size // 2
        groups = sec.get_int("groups", 1)
        bn = sec.get_bool("batch_normalize", False)
        self.act_name = activation(sec, "logistic")
        for key, bad in (("xnor", "XNOR (binary) convolutions"), ("binary", "binary weights"),
                         ("share_index", "shared weights"), ("flipped", "flipped weights"),
                         ("antialiasing", "antialiasing"), ("deform", "deformable convolution"),
                         ("coordconv", "coordconv"), ("assisted_excitation", "assisted excitation")):
            if sec.get_int(key, 0):
                raise sec.error(f"{bad} ({key}=1) are not supported", key)
        sec.mark_used("stopbackward", "train_only_bn", "dontload", "dontloadscales", "learning_rate",
                      "sway", "rotate", "stretch", "stretch_sway", "angle", "grad_centr", "cbn")
        if n < 1 or size < 1 or sx < 1 or sy < 1 or groups < 1 or dilation < 1 or padding < 0:
            raise sec.error(f"bad geometry: filters={n} size={size} stride={sx}x{sy} groups={groups} "
                            f"dilation={dilation} padding={padding}")
        c = in_shape.c
        if (c // max(groups, 1)) * n * size * size > MAX_WEIGHTS:
            raise sec.error(f"filters={n} x size={size}x{size} x {c // groups} input channels is "
                            f"more than {MAX_WEIGHTS:,} weights: refusing to allocate")
        if c % groups or n % groups:
            raise sec.error(f"groups={groups} must divide input channels {c} and filters {n}", "groups")
        out_h = (in_shape.h + 2 * padding - size) // sy + 1
        out_w = (in_shape.w + 2 * padding - size) // sx + 1
        if out_h < 1 or out_w < 1:
            raise sec.error(f"output size {out_w}x{out_h} from input {in_shape.w}x{in_shape.h} is empty")
        self.size, self.stride, self.padding, self.groups, self.batch_normalize = size, (sy, sx), padding, groups, bn
        self.conv = nn.Conv2d(c, n, size, (sy, sx), padding * dilation, dilation, groups, bias=not bn)
        self.bn = DarknetBatchNorm(n) if bn else None
        self.act = ACTIVATIONS[self.act_name]
        self.out_shape = Shape(n, out_h, out_w)
        self.bflops = 2.0 * (c // groups) * n * size * size * out_h * out_w / 1e9

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def describe(self):
        sy, sx = self.stride
        g = f" {self.groups:d}/{self.groups:d}" if self.groups > 1 else ""
        s = f"{sx:2d}" if sx == sy else f"{sx}x{sy}"
        return f"{self.out_shape.c:5d}{g:>5s}  {self.size:2d} x{self.size:2d}/{s}"

    # Darknet's .weights order for this layer.
    def weight_tensors(self):
        if self.bn is not None:
            return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]
        return [self.conv.bias, self.conv.weight]


class MaxPool(DarknetLayer):
    kind = "max"

    def __init__(self, index, in_shape: Shape, sec: Section):
        super().__init__(index, in_shape)
        stride = sec.get_int("stride", 1)
        sx = sec.get_int("stride_x", stride)
        sy = sec.get_int("stride_y", stride)
        size = sec.get_int("size", stride)
        padding = sec.get_int("padding", size - 1)
        for key in ("maxpool_depth", "antialiasing"):
            if sec.get_int(key, 0):
                raise sec.error(f"{key}=1 is not supported", key)
        sec.mark_used("out_channels", "maxpool_zero_nonmax")
        if size < 1 or sx < 1 or sy < 1 or padding < 0:
            raise sec.error(f"bad geometry: size={size} stride={sx}x{sy} padding={padding}")
        self.size, self.stride, self.pad_total = size, (sy, sx), padding
        out_h = (in_shape.h + padding - size) // sy + 1
        out_w = (in_shape.w + padding - size) // sx + 1
        if out_h < 1 or out_w < 1:
            raise sec.error(f"output size {out_w}x{out_h} from input {in_shape.w}x{in_shape.h} is empty")
        self.out_shape = Shape(in_shape.c, out_h, out_w)
        self.bflops = size * size * in_shape.c * out_h * out_w / 1e9

    def forward(self, x):
        # Window starts at -(padding/2); cells outside the image never win (-inf).
        p0 = self.pad_total // 2
        p1 = self.pad_total - p0
        if self.pad_total:
            x = F.pad(x, (p0, p1, p0, p1), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def describe(self):
        sy, sx = self.stride
        return f"{'':5s}       {self.size:2d}x{self.size:2d}/{sx:2d}"


class Route(DarknetLayer):
    kind = "route"

    def __init__(self, index, in_shape, sec: Section, shapes: list[Shape]):
        super().__init__(index, in_shape)
        layers = sec.get_ints("layers")
        if not layers:
            raise sec.error("[route] needs layers=", "layers")
        self.sources = [_resolve(sec, "layers", l, index) for l in layers]
        self.groups = sec.get_int("groups", 1)
        self.group_id = sec.get_int("group_id", 0)
        sec.mark_used("stopbackward")
        if self.groups < 1 or not 0 <= self.group_id < self.groups:
            raise sec.error(f"group_id={self.group_id} must lie in [0, groups={self.groups})", "group_id")
        ins = [shapes[s] for s in self.sources]
        for s, sh in zip(self.sources, ins):
            if (sh.h, sh.w) != (ins[0].h, ins[0].w):
                raise sec.error(f"route inputs differ in size: layer {self.sources[0]} is {ins[0].w}x{ins[0].h}, "
                                f"layer {s} is {sh.w}x{sh.h}", "layers")
            if sh.c % self.groups:
                raise sec.error(f"groups={self.groups} does not divide the {sh.c} channels of layer {s}", "groups")
        self.out_shape = Shape(sum(sh.c // self.groups for sh in ins), ins[0].h, ins[0].w)

    def forward(self, outputs):
        parts = []
        for s in self.sources:
            t = outputs[s]
            if self.groups > 1:
                c = t.shape[1] // self.groups
                t = t[:, c * self.group_id: c * (self.group_id + 1)]
            parts.append(t)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def describe(self):
        return " ".join(str(s) for s in self.sources) + (f" {self.group_id}/{self.groups}" if self.groups > 1 else "")


class Shortcut(DarknetLayer):
    kind = "shortcut"

    def __init__(self, index, in_shape, sec: Section, shapes: list[Shape]):
        super().__init__(index, in_shape)
        frm = sec.get_ints("from")
        if not frm:
            raise sec.error("[shortcut] needs from=", "from")
        if len(frm) != 1:
            raise sec.error("multi-input [shortcut] is not supported", "from")
        self.source = _resolve(sec, "from", frm[0], index)
        wt = sec.get_str("weights_type", "none")
        if wt != "none":
            raise sec.error(f"weights_type={wt} is not supported", "weights_type")
        sec.mark_used("weights_normalization")
        self.act_name = activation(sec, "linear")
        self.act = ACTIVATIONS[self.act_name]
        other = shapes[self.source]
        if (other.c, other.h, other.w) != (in_shape.c, in_shape.h, in_shape.w):
            raise sec.error(f"shortcut from layer {self.source} ({other}) to a different shape ({in_shape}) "
                            "is not supported", "from")
        self.bflops = in_shape.c * in_shape.h * in_shape.w / 1e9

    def forward(self, x, outputs):
        return self.act(x + outputs[self.source])

    def describe(self):
        return f"Shortcut Layer: {self.source}"


class Upsample(DarknetLayer):
    kind = "upsample"

    def __init__(self, index, in_shape, sec: Section):
        super().__init__(index, in_shape)
        self.stride = sec.get_int("stride", 2)
        self.scale = sec.get_float("scale", 1.0)
        if self.stride < 1:
            raise sec.error("downsampling [upsample] (negative stride) is not supported", "stride")
        self.out_shape = Shape(in_shape.c, in_shape.h * self.stride, in_shape.w * self.stride)

    def forward(self, x):
        y = F.interpolate(x, scale_factor=self.stride, mode="nearest") if self.stride > 1 else x
        return y * self.scale if self.scale != 1.0 else y

    def describe(self):
        return f"{'':14s}{self.stride:2d}x"


class Dropout(DarknetLayer):
    kind = "dropout"

    def __init__(self, index, in_shape, sec: Section):
        super().__init__(index, in_shape)
        self.p = sec.get_float("probability", 0.2)
        if sec.get_int("dropblock", 0):
            raise sec.error("dropblock=1 is not supported", "dropblock")
        sec.mark_used("dropblock_size_rel", "dropblock_size_abs")
        if not 0 <= self.p < 1:
            raise sec.error(f"probability={self.p} must lie in [0, 1)", "probability")

    def forward(self, x):
        # Darknet scales kept values by 1/(1-p) in training, identity in inference.
        return F.dropout(x, self.p, self.training)

    def describe(self):
        return f"p = {self.p:.2f}"


class AvgPool(DarknetLayer):
    kind = "avg"

    def __init__(self, index, in_shape, sec: Section):
        super().__init__(index, in_shape)
        self.out_shape = Shape(in_shape.c, 1, 1)
        self.bflops = in_shape.c * in_shape.h * in_shape.w / 1e9

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Yolo(DarknetLayer):
    """[yolo]: holds the anchors and training options; decodes in eval mode.

    Raw layout (from the previous conv): (B, len(mask)*(5+classes), H, W), per anchor
    x, y, w, h, objectness, classes.  Decoded layout: (B, len(mask)*H*W, 5+classes) in
    (anchor, row, col) order: cx, cy, w, h relative to the network input, objectness,
    class probabilities (not multiplied by objectness).
    """

    kind = "yolo"

    def __init__(self, index, in_shape, sec: Section, net_w: int, net_h: int):
        super().__init__(index, in_shape)
        self.classes = sec.get_int("classes", 20)
        total = sec.get_int("num", 1)
        self.mask = sec.get_ints("mask", list(range(total)))
        anchors = sec.get_floats("anchors", [0.5] * (2 * total))
        if self.classes < 1:
            raise sec.error(f"classes={self.classes} must be positive", "classes")
        if len(anchors) != 2 * total:
            raise sec.error(f"anchors= has {len(anchors)} numbers, num={total} needs {2 * total}", "anchors")
        for m in self.mask:
            if not 0 <= m < total:
                raise sec.error(f"mask index {m} is outside the {total} anchors", "mask")
        self.anchors = [(anchors[2 * i], anchors[2 * i + 1]) for i in range(total)]
        self.net_w, self.net_h = net_w, net_h
        self.jitter = sec.get_float("jitter", 0.2)
        self.resize = sec.get_float("resize", 1.0)
        self.ignore_thresh = sec.get_float("ignore_thresh", 0.5)
        self.truth_thresh = sec.get_float("truth_thresh", 1.0)
        self.iou_thresh = sec.get_float("iou_thresh", 1.0)
        self.iou_thresh_kind = sec.get_choice("iou_thresh_kind", {"iou", "giou", "diou", "ciou"}, "iou")
        self.scale_x_y = sec.get_float("scale_x_y", 1.0)
        self.iou_normalizer = sec.get_float("iou_normalizer", 0.75)
        self.obj_normalizer = sec.get_float("obj_normalizer", 1.0)
        self.cls_normalizer = sec.get_float("cls_normalizer", 1.0)
        self.delta_normalizer = sec.get_float("delta_normalizer", 1.0)
        self.iou_loss = sec.get_choice("iou_loss", {"mse", "iou", "giou", "diou", "ciou"}, "mse")
        self.nms_kind = sec.get_choice("nms_kind", {"default", "greedynms", "diounms", "cornersnms"}, "default")
        self.beta_nms = sec.get_float("beta_nms", 0.6)
        self.new_coords = sec.get_int("new_coords", 0)
        self.random = sec.get_float("random", 0.0)
        self.max_boxes = sec.get_int("max", 200)
        self.max_delta = sec.get_float("max_delta", float("inf"))
        self.label_smooth_eps = sec.get_float("label_smooth_eps", 0.0)
        self.objectness_smooth = sec.get_int("objectness_smooth", 0)
        cpc = sec.get_ints("counters_per_class", None)
        if cpc is not None and len(cpc) != self.classes:
            raise sec.error(f"counters_per_class has {len(cpc)} values, classes={self.classes}", "counters_per_class")
        self.counters_per_class = cpc
        if sec.get_int("focal_loss", 0):
            raise sec.error("focal_loss=1 is not supported by the trainer", "focal_loss")
        sec.mark_used("show_details", "map", "embedding_layer", "track_history_size",
                      "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm", "embedding_size",
                      "equidistant_point", "thresh", "bias_match", "rescore", "absolute")
        na = len(self.mask)
        expected = na * (self.classes + 5)
        if in_shape.c != expected:
            raise sec.error(f"the layer before [yolo] has filters={in_shape.c}, but (classes+5)*len(mask) = "
                            f"({self.classes}+5)*{na} = {expected}")
        self.register_buffer("anchor_wh", torch.tensor([self.anchors[m] for m in self.mask], dtype=torch.float32),
                             persistent=False)

    @property
    def num_masked(self):
        return len(self.mask)

    def decode(self, x: torch.Tensor, net_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Raw head -> (B, A*H*W, 5+C); ``net_hw`` is the network input size (anchors are in
        its pixels), by default the cfg's."""
        net_h, net_w = net_hw or (self.net_h, self.net_w)
        b, _, h, w = x.shape
        na, nc = len(self.mask), self.classes
        p = x.view(b, na, nc + 5, h, w).permute(0, 1, 3, 4, 2).float()
        if not self.new_coords:
            xy = torch.sigmoid(p[..., 0:2])
            rest = torch.sigmoid(p[..., 4:])
        else:
            xy = p[..., 0:2]
            rest = p[..., 4:]
        s = self.scale_x_y
        if s != 1.0:
            xy = xy * s - (s - 1) / 2
        gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=p.dtype),
                                torch.arange(w, device=x.device, dtype=p.dtype), indexing="ij")
        cx = (gx + xy[..., 0]) / w
        cy = (gy + xy[..., 1]) / h
        aw = self.anchor_wh[:, 0].to(p.device).view(1, na, 1, 1) / net_w
        ah = self.anchor_wh[:, 1].to(p.device).view(1, na, 1, 1) / net_h
        if self.new_coords:
            bw = p[..., 2] * p[..., 2] * 4 * aw
            bh = p[..., 3] * p[..., 3] * 4 * ah
        else:
            bw = torch.exp(p[..., 2]) * aw
            bh = torch.exp(p[..., 3]) * ah
        out = torch.cat([torch.stack([cx, cy, bw, bh], -1), rest], -1)
        return out.reshape(b, na * h * w, nc + 5)

    def describe(self):
        return f"classes {self.classes}, mask {','.join(map(str, self.mask))}"


def _resolve(sec: Section, key: str, ref: int, index: int) -> int:
    """Darknet: negative = relative to this layer, otherwise absolute; must be earlier."""
    src = index + ref if ref < 0 else ref
    if not 0 <= src < index:
        raise sec.error(f"{key}={ref} points to layer {src}, outside layers 0..{index - 1}", key)
    return src
