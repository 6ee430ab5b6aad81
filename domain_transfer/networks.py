"""Networks of the unpaired GAN: the attention generator, the PatchNCE projection heads,
the PatchGAN and projected discriminators, and the segmentation network f_s.

Shapes follow joliGEN's mobile_resnet_attn / CUT / projected_d (facts: joligen.md); the code
is written from those facts, not copied.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from darknet_kd.model import Darknet


def _pad(kind: str, n: int) -> nn.Module:
    return {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zeros": nn.ZeroPad2d}[kind](n)


def _norm(c: int) -> nn.Module:
    # joliGEN's mobile generator: InstanceNorm without affine parameters everywhere.
    return nn.InstanceNorm2d(c, affine=False)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """CUT/joliGEN init 'normal': conv and linear weights ~ N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SeparableConv(nn.Module):
    """Depthwise 3x3 (padded with ``padding``) -> InstanceNorm -> pointwise 1x1
    (mobile_modules.SeparableConv2d as used by the mobile resnet blocks)."""

    def __init__(self, c: int, padding: str):
        super().__init__()
        self.body = nn.Sequential(_pad(padding, 1), nn.Conv2d(c, c, 3, groups=c), _norm(c), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return self.body(x)


class MobileResBlock(nn.Module):
    """x + IN(SC(ReLU(IN(SC(x)))))."""

    def __init__(self, c: int, padding: str):
        super().__init__()
        self.body = nn.Sequential(SeparableConv(c, padding), _norm(c), nn.ReLU(True),
                                  SeparableConv(c, padding), _norm(c))

    def forward(self, x):
        return x + self.body(x)


class AttnGenerator(nn.Module):
    """ResNet encoder-decoder whose output blends generated images with the input.

    Encoder: pad 3, conv7 3->ngf, two stride-2 conv3 (ngf->2ngf->4ngf), each with IN+ReLU;
    ``blocks`` depthwise-separable residual blocks at 4ngf and 1/4 resolution.  Two decoders
    without shared weights, each two ConvTranspose(k3,s2,p1,op1) with IN+ReLU: the content
    decoder ends in pad 3, conv7 -> 3*(M-1), tanh (M-1 RGB images C_i); the attention decoder
    ends in conv1 -> M and a softmax over the M channels.  Output = sum_i A_i C_i + A_{M-1} x
    (no final tanh), as joliGEN's mobile_resnet_attn with nb_mask_attn M=10, one input mask.

    Feature points for PatchNCE (:meth:`encode`): 0 input, 1 stem, 2 and 3 the downsampling
    convs, 4+k the output of residual block k.  Fully convolutional: any H, W work (sizes
    that are not multiples of 4 are padded by replication and cropped back).
    """

    def __init__(self, ngf: int = 128, blocks: int = 9, padding: str = "reflect", attn_masks: int = 10):
        super().__init__()
        self.ngf, self.attn_masks = ngf, attn_masks
        self.stem = nn.Sequential(_pad(padding, 3), nn.Conv2d(3, ngf, 7), _norm(ngf), nn.ReLU(True))
        self.down = nn.ModuleList([
            nn.Sequential(_pad(padding, 1), nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2), _norm(ngf * m * 2),
                          nn.ReLU(True)) for m in (1, 2)])
        self.blocks = nn.ModuleList([MobileResBlock(ngf * 4, padding) for _ in range(blocks)])

        def up():
            return [nn.ConvTranspose2d(ngf * 4, ngf * 2, 3, 2, 1, output_padding=1), _norm(ngf * 2), nn.ReLU(True),
                    nn.ConvTranspose2d(ngf * 2, ngf, 3, 2, 1, output_padding=1), _norm(ngf), nn.ReLU(True)]

        self.content = nn.Sequential(*up(), _pad(padding, 3), nn.Conv2d(ngf, 3 * (attn_masks - 1), 7), nn.Tanh())
        self.attention = nn.Sequential(*up(), nn.Conv2d(ngf, attn_masks, 1))
        init_weights(self)

    @property
    def num_features(self) -> int:
        return 4 + len(self.blocks)

    def feature_channels(self, layers) -> list[int]:
        ch = [3, self.ngf, self.ngf * 2] + [self.ngf * 4] * (1 + len(self.blocks))
        return [ch[i] for i in layers]

    def encode(self, x, layers=None):
        """The encoder; with ``layers`` also the list of those feature points (stops after the
        deepest one needed)."""
        feats, want = [], set(layers or ())
        last = max(want) if want else None
        if 0 in want:
            feats.append(x)
        h = self.stem(x)
        if 1 in want:
            feats.append(h)
        for i, d in enumerate(self.down):
            h = d(h)
            if 2 + i in want:
                feats.append(h)
        for k, b in enumerate(self.blocks):
            if last is not None and last < 4 + k:
                break
            h = b(h)
            if 4 + k in want:
                feats.append(h)
        return h, feats

    def forward(self, x, return_attention: bool = False):
        H, W = x.shape[-2:]
        ph, pw = (-H) % 4, (-W) % 4
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        h, _ = self.encode(xp)
        content = self.content(h)
        attn = torch.softmax(self.attention(h), dim=1)
        m = self.attn_masks - 1
        B = x.shape[0]
        out = (attn[:, :m, None] * content.view(B, m, 3, *content.shape[-2:])).sum(1) + attn[:, m:] * xp
        out = out[..., :H, :W]
        if return_attention:
            return out, attn[:, m, :H, :W]
        return out


class PatchSampleMLP(nn.Module):
    """CUT's PatchSampleF (mlp_sample): per feature layer an MLP Linear(C, nc)-ReLU-Linear(nc, nc)
    applied to ``num_patches`` random positions (shared across the batch), then L2-normalised."""

    def __init__(self, channels: list[int], nc: int = 256):
        super().__init__()
        self.heads = nn.ModuleList([nn.Sequential(nn.Linear(c, nc), nn.ReLU(True), nn.Linear(nc, nc))
                                    for c in channels])
        init_weights(self)

    def forward(self, feats, num_patches: int, patch_ids=None):
        """Returns ([(B*n, nc)] per layer, [ids per layer]); ``patch_ids`` reuses positions."""
        out, ids = [], []
        for j, (f, head) in enumerate(zip(feats, self.heads)):
            B, C, H, W = f.shape
            flat = f.flatten(2).transpose(1, 2)  # B, HW, C
            if patch_ids is not None:
                pid = patch_ids[j]
            else:
                pid = torch.randperm(H * W, device=f.device)[: min(num_patches, H * W)]
            x = head(flat[:, pid].reshape(-1, C))
            out.append(F.normalize(x.float(), dim=1))
            ids.append(pid)
        return out, ids


class PatchGAN(nn.Module):
    """pix2pix/CUT 'basic' PatchGAN: C4s2(3->ndf)+LReLU(.2); n-1 x [C4s2, IN, LReLU]; C4s1, IN, LReLU;
    C4s1 -> 1 logit map (70x70 receptive field with 3 layers)."""

    def __init__(self, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        seq = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = ndf
        for n in range(1, n_layers):
            c2 = ndf * min(2 ** n, 8)
            seq += [nn.Conv2d(c, c2, 4, 2, 1), nn.InstanceNorm2d(c2), nn.LeakyReLU(0.2, True)]
            c = c2
        c2 = ndf * min(2 ** n_layers, 8)
        seq += [nn.Conv2d(c, c2, 4, 1, 1), nn.InstanceNorm2d(c2), nn.LeakyReLU(0.2, True), nn.Conv2d(c2, 1, 4, 1, 1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class MultiScalePatchGAN(nn.Module):
    """pix2pixHD's multi-scale D: one PatchGAN per scale, the input halved (avg-pool 3, stride 2)
    between scales.  Returns a list of logit maps."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, scales: int = 2):
        super().__init__()
        self.ds = nn.ModuleList([PatchGAN(ndf, n_layers) for _ in range(scales)])
        init_weights(self)

    def forward(self, x):
        outs = []
        for i, d in enumerate(self.ds):
            if i:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outs.append(d(x))
        return outs


def default_proj_layers(model: Darknet) -> list[int]:
    """For a Darknet detector: the last layer at each stride 4, 8, 16, 32 before the first [yolo]
    layer, leaving out the convolution that feeds a [yolo] layer (its channels are box
    predictions, not features).  yolov4-tiny -> 8, 16, 24, 28."""
    first_yolo = min(y.index for y in model.yolo_layers)
    head_inputs = {y.index - 1 for y in model.yolo_layers}
    by_stride = {}
    for m in model.layers[:first_yolo]:
        if m.index in head_inputs:
            continue
        stride = model.net.height // m.out_shape.h if m.out_shape.h else 0
        if stride in (4, 8, 16, 32):
            by_stride[stride] = m.index
    return [by_stride[s] for s in sorted(by_stride)]


class ProjectedDiscriminator(nn.Module):
    """Projected GAN's discriminator on a frozen feature network (here a Darknet detector).

    The backbone (frozen, eval mode; gradients flow through it to the generator) gives
    features at several strides (``layers``, Darknet layer indices); a fixed random
    projection mixes them (CCM: 1x1 conv per scale to ``cout * 2^i`` channels; CSM: top-down,
    each scale adds a 1x1 projection of the upsampled coarser one), both frozen as in
    Projected GAN / joliGEN; trainable spectral-norm conv heads give one logit map per scale.
    Input: RGB in [-1, 1]; the backbone sees (x + 1) / 2, Darknet's [0, 1] input.
    """

    def __init__(self, backbone: Darknet, layers: list[int], input_size: int, cout: int = 64, size: int = 0,
                 seed: int = 0):
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.layers, self.size = list(layers), size
        last = max(self.layers)
        # Drop the layers past the deepest feature (they are never run).
        self.backbone.layers = self.backbone.layers[: last + 1]
        self.backbone.yolo_layers = []
        chans = [self.backbone.layers[i].out_shape.c for i in self.layers]
        outs = [cout * 2 ** i for i in range(len(chans))]
        g = torch.Generator().manual_seed(seed)
        self.ccm = nn.ModuleList([nn.Conv2d(c, o, 1) for c, o in zip(chans, outs)])
        self.csm = nn.ModuleList([nn.Conv2d(outs[i + 1], outs[i], 1) for i in range(len(outs) - 1)])
        with torch.no_grad():
            for m in [*self.ccm, *self.csm]:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.zero_()
                m.requires_grad_(False)
        strides = [self.backbone.net.height // self.backbone.layers[i].out_shape.h for i in self.layers]
        self.heads = nn.ModuleList([self._head(o, max(1, (size or input_size) // s)) for o, s in zip(outs, strides)])

    @staticmethod
    def _head(c: int, res: int) -> nn.Module:
        """conv3 + LReLU, up to two stride-2 conv4 (channels x2, capped at 256) while the map stays
        at least 4x4, then conv1 -> 1 logit a position.  All spectral-normalised."""
        seq, ci = [spectral_norm(nn.Conv2d(c, min(c, 256), 3, 1, 1)), nn.LeakyReLU(0.2, True)], min(c, 256)
        for _ in range(2):
            if res < 8:
                break
            co = min(ci * 2, 256)
            seq += [spectral_norm(nn.Conv2d(ci, co, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            ci, res = co, res // 2
        seq.append(spectral_norm(nn.Conv2d(ci, 1, 1)))
        return nn.Sequential(*seq)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen BN statistics
        return self

    def features(self, x):
        x = (x + 1) * 0.5
        if self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        _, feats = self.backbone(x, keep=self.layers, raw=True)
        return [feats[i] for i in self.layers]

    def forward(self, x):
        feats = [m(f) for m, f in zip(self.ccm, self.features(x))]
        mixed = [None] * len(feats)
        mixed[-1] = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(mixed[i + 1], size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed[i] = feats[i] + self.csm[i](up)
        return [h(m) for h, m in zip(self.heads, mixed)]


def build_backbone(cfg_path, weights: str, seed: int = 0) -> Darknet:
    """The frozen feature network: a Darknet detector from its .cfg and .weights, or with
    seeded random weights (``weights == 'random'``: the randomly initialised projector)."""
    from darknet_kd.model.weights import randomize

    model = Darknet.from_cfg(cfg_path)
    if weights == "random":
        randomize(model, seed)
    else:
        model.load_weights(weights)
    return model.eval()


class SegNet(nn.Module):
    """f_s: a small U-Net predicting per-pixel classes (background + detector classes) from the
    box masks (joliGEN uses SegFormer MiT-B0; no pretrained weights can be had here and the
    masks are rectangles, so a small conv net suffices).  Three stride-2 levels, skip
    connections, logits at full resolution.  Input in [-1, 1]."""

    def __init__(self, classes: int, ngf: int = 32):
        super().__init__()

        def block(ci, co, stride=1):
            return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1), nn.InstanceNorm2d(co, affine=True),
                                 nn.LeakyReLU(0.2, True))

        c = [ngf, ngf * 2, ngf * 4, ngf * 4]
        self.enc = nn.ModuleList([block(3, c[0]), block(c[0], c[1], 2), block(c[1], c[2], 2), block(c[2], c[3], 2)])
        self.dec = nn.ModuleList([block(c[3] + c[2], c[2]), block(c[2] + c[1], c[1]), block(c[1] + c[0], c[0])])
        self.out = nn.Conv2d(c[0], classes, 1)

    def forward(self, x):
        H, W = x.shape[-2:]
        ph, pw = (-H) % 8, (-W) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        for d, s in zip(self.dec, reversed(skips[:-1])):
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = d(torch.cat([x, s], 1))
        return self.out(x)[..., :H, :W]


__all__ = ["AttnGenerator", "PatchSampleMLP", "PatchGAN", "MultiScalePatchGAN", "ProjectedDiscriminator",
           "SegNet", "build_backbone", "default_proj_layers", "init_weights"]
