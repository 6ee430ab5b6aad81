"""Options of a domain-transfer run, the ``cpu`` / ``gpu`` presets, and their checks.

The ``gpu`` preset is the published setting (domain-crossKD on joliGEN, see
/work/shared/facts/joligen.md): mobile_resnet_attn generator with ngf 128 and 9 blocks,
crops of 256 around objects with a jitter of 64, a projected discriminator plus a PatchGAN,
PatchNCE with identity NCE, semantic consistency of weight 10, batch 1 with 8-step gradient
accumulation, AdamW (G 2e-4, D 1e-4), generator EMA 0.999, mixed precision.

The ``cpu`` preset keeps every component but shrinks the networks and crops so a run
trains in under an hour on 2 CPU cores (measured numbers are in docs/results.md). It also
pretrains f_s (``fs_pretrain`` 1000 iterations, ``lr_fs`` 1e-3): otherwise f_s does not get
below joliGEN's 1.0 gate within a short run, and the semantic terms never switch on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from darknet_kd.errors import DarknetKDError


# the shipped DriveSim student cfg, by absolute path so a run started from any folder finds it
DEFAULT_DETECTOR_CFG = str(Path(__file__).resolve().parent.parent / "cfg" / "yolov4-tiny-drivesim.cfg")


class ConfigError(DarknetKDError):
    """Options that do not make a valid run (or that disagree with a checkpoint)."""


@dataclass
class GanConfig:
    # generator (mobile_resnet_attn)
    ngf: int = 128
    blocks: int = 9
    padding: str = "reflect"          # reflect | replicate | zeros
    attn_masks: int = 10              # n content masks + 1 input mask
    # discriminators
    net_d: list[str] = field(default_factory=lambda: ["projected", "patch"])
    ndf: int = 64
    d_layers: int = 3                 # PatchGAN depth
    d_scales: int = 1                 # PatchGAN scales (1 = joliGEN's basic D)
    gan_mode_patch: str = "lsgan"     # lsgan | hinge
    gan_mode_projected: str = "hinge"
    detector_cfg: str = DEFAULT_DETECTOR_CFG
    detector_weights: str = "random"  # path to the source-trained .weights, or "random"
    proj_layers: list[int] = field(default_factory=list)  # [] = last layer of each stride 4..32
    proj_channels: int = 64           # CCM output channels at the finest scale (doubling)
    proj_size: int = 0                # resize D input to this size (0 = keep)
    pool_size: int = 50
    # losses
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True
    nce_layers: list[int] = field(default_factory=lambda: [0, 2, 3, 4, 8])
    nce_patches: int = 256
    nce_T: float = 0.07
    nce_dim: int = 256
    lambda_sem: float = 10.0
    sem_idt: bool = True
    sem_threshold: float = 1.0        # semantic terms off while the last f_s loss is above this
    fs_pretrain: int = 0              # f_s-only iterations before the GAN's first (0: joliGEN's way)
    fs_ngf: int = 32
    # data
    crop: int = 256
    crop_delta: int = 64
    flip: bool = True
    # optimisation
    batch: int = 1
    iter_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    lr_fs: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    iters: int = 200000
    decay_iters: int = 0              # linear LR decay to 0 over the last N iterations
    ema: float = 0.999
    amp: bool = True                  # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where=None) -> "GanConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown options {unknown}", where)
        return cls(**d)

    def validate(self, where=None) -> "GanConfig":
        """Raise ConfigError for options that cannot work together."""
        def bad(msg):
            raise ConfigError(msg, where)

        if self.ngf < 1 or self.blocks < 0 or self.ndf < 1 or self.fs_ngf < 1:
            bad("ngf, ndf and fs_ngf must be positive and blocks non-negative")
        if self.padding not in ("reflect", "replicate", "zeros"):
            bad(f"padding {self.padding!r}: choose reflect, replicate or zeros")
        if self.attn_masks < 2:
            bad("attn_masks must be at least 2 (one generated image and the input)")
        for d in self.net_d:
            if d not in ("projected", "patch"):
                bad(f"unknown discriminator {d!r}: choose projected and/or patch")
        if not self.net_d:
            bad("at least one discriminator is needed")
        for m in (self.gan_mode_patch, self.gan_mode_projected):
            if m not in ("lsgan", "hinge"):
                bad(f"GAN mode {m!r}: choose lsgan or hinge")
        if self.crop % 4 or self.crop < 16:
            bad(f"crop {self.crop} must be a multiple of 4 (the generator downsamples twice), at least 16")
        if not 0 <= self.crop_delta < self.crop:
            bad(f"crop_delta {self.crop_delta} must lie in [0, crop)")
        if "patch" in self.net_d:
            smallest = self.crop // 2 ** (self.d_scales - 1)
            if smallest // 2 ** self.d_layers - 2 < 1:
                bad(f"crop {self.crop} is too small for a PatchGAN with {self.d_layers} layers at "
                    f"{self.d_scales} scales (the coarsest scale sees {smallest} px; it needs at least "
                    f"{3 * 2 ** self.d_layers})")
        n_feats = 4 + self.blocks
        for i in self.nce_layers:
            if not 0 <= i < n_feats:
                bad(f"nce layer {i} does not exist: the generator has feature points 0..{n_feats - 1} "
                    "(0 input, 1 stem, 2-3 downsampling, 4+k residual block k)")
        if self.lambda_nce > 0 and not self.nce_layers:
            bad("lambda_nce > 0 needs nce_layers")
        if self.nce_patches < 2 or self.nce_T <= 0 or self.nce_dim < 1:
            bad("nce_patches must be >= 2, nce_T > 0, nce_dim >= 1")
        if self.batch < 1 or self.iter_size < 1 or self.iters < 1:
            bad("batch, iter_size and iters must be positive")
        if not 0 <= self.decay_iters <= self.iters:
            bad(f"decay_iters {self.decay_iters} must lie in [0, iters={self.iters}]")
        if not 0 <= self.ema < 1:
            bad(f"ema {self.ema} must lie in [0, 1)")
        if self.fs_pretrain < 0:
            bad(f"fs_pretrain {self.fs_pretrain} must be non-negative")
        if min(self.lr_g, self.lr_d, self.lr_fs) <= 0:
            bad("learning rates must be positive")
        return self


PRESETS = {
    "gpu": {},
    "cpu": dict(ngf=16, blocks=4, crop=128, crop_delta=32, ndf=32, fs_ngf=16, nce_layers=[0, 2, 3, 5, 7],
                nce_patches=128, nce_dim=128, proj_channels=32, batch=1, iter_size=4, iters=3000, pool_size=20,
                amp=True, lr_fs=1e-3, fs_pretrain=1000),
}

#: Options that may change when a run is resumed (they do not change the model or its losses).
RESUMABLE = {"iters", "decay_iters"}


def preset(name: str, **overrides) -> GanConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")
    return GanConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}).validate()
