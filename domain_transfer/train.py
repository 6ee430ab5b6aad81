"""`domain-transfer train`: CUT + PatchNCE + semantic box-mask consistency (joliGEN's loop).

One iteration (facts: joligen.md section 5), with A = source crops, B = target crops:

1. G runs on cat(A, B): fake_B = G(A), idt_B = G(B).
2. G and the PatchNCE heads F: sum over discriminators of lambda_gan * L_G(D(fake_B));
   lambda_nce * 1/2 [NCE(A, fake_B) + NCE(B, idt_B)] (without identity NCE only the first);
   with f_s frozen, lambda_sem * [CE(f_s(fake_B), mask_A) + CE(f_s(idt_B), mask_B)], where
   mask_B is the target's box mask if it has a label file, else argmax f_s(B).  Both
   semantic terms are off at the first iteration and while the last f_s loss is above
   ``sem_threshold``.
3. The discriminators: sum of L_D(D(B), D(pool(fake_B))) (one pool of past fakes per D).
4. f_s, in fp32: CE(f_s(A), mask_A) + CE(f_s(B), mask_B) on the labelled target crops.

Before the first iteration, ``fs_pretrain`` iterations of step 4 alone (the ``cpu`` preset's
addition, so that a short run's semantic terms can switch on; 0 in the ``gpu`` preset).

Each loss is divided by ``iter_size``; the optimisers (AdamW; G+F, D, f_s) step every
``iter_size`` iterations.  The generator EMA (decay ``ema``) is updated every iteration.
Autocast: bf16 on CPU, fp16 with a GradScaler on CUDA (``amp``).  The frozen projector's
backbone is not stored in checkpoints: it is rebuilt from ``detector_cfg`` and
``detector_weights`` (whose SHA-256 is checked on resume).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from darknet_kd.errors import CheckpointError, DataError, TrainingError
from darknet_kd.fileio import atomic_path, atomic_write
from darknet_kd.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from darknet_kd.train.trainer import ModelEMA

from .config import RESUMABLE, ConfigError, GanConfig
from .data import CropSampler, read_image, source_images, target_images, to_image, to_tensor
from .losses import ImagePool, d_loss, g_loss, patch_nce
from .networks import (AttnGenerator, MultiScalePatchGAN, PatchSampleMLP, ProjectedDiscriminator, SegNet,
                       build_backbone, default_proj_layers)

KIND = "domain-transfer"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_generator(cfg: GanConfig) -> AttnGenerator:
    return AttnGenerator(cfg.ngf, cfg.blocks, cfg.padding, cfg.attn_masks)


def build_discriminators(cfg: GanConfig) -> dict:
    """name -> (module, GAN mode)."""
    ds = {}
    torch.manual_seed(cfg.seed + 1)
    for name in cfg.net_d:
        if name == "patch":
            ds[name] = (MultiScalePatchGAN(cfg.ndf, cfg.d_layers, cfg.d_scales), cfg.gan_mode_patch)
        else:
            backbone = build_backbone(cfg.detector_cfg, cfg.detector_weights, cfg.seed)
            layers = cfg.proj_layers or default_proj_layers(backbone)
            bad = [i for i in layers if not 0 <= i < len(backbone.layers)]
            if bad:
                raise ConfigError(f"proj_layers {bad} do not exist in {cfg.detector_cfg} "
                                  f"({len(backbone.layers)} layers)")
            ds[name] = (ProjectedDiscriminator(backbone, layers, cfg.crop, cfg.proj_channels, cfg.proj_size,
                                               cfg.seed), cfg.gan_mode_projected)
    return ds


def trainable_state(module: torch.nn.Module) -> dict:
    """state_dict without the frozen detector backbone (rebuilt from its files)."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("backbone.")}


def load_module(module, state, what: str, path, strict_prefix_ok=("backbone.",)):
    """load_state_dict with a CheckpointError naming the checkpoint when shapes or keys differ."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = [s.strip() for s in str(e).splitlines() if "size mismatch" in s][:2]
        raise CheckpointError(f"{what} does not match the options: {'; '.join(first) or str(e).splitlines()[0]}",
                              path) from None
    missing = [k for k in missing if not k.startswith(strict_prefix_ok)]
    if missing or unexpected:
        raise CheckpointError(f"{what} does not match the options (missing {missing[:3]}, unexpected "
                              f"{list(unexpected)[:3]})", path)


def check_checkpoint(ck: dict, path) -> GanConfig:
    """The GanConfig of a domain-transfer checkpoint (CheckpointError if it is not one)."""
    if ck.get("kind") != KIND:
        raise CheckpointError(f"not a domain-transfer checkpoint (kind {ck.get('kind')!r})", path)
    for key in ("config", "G", "iteration"):
        if key not in ck:
            raise CheckpointError(f"checkpoint has no '{key}'", path)
    try:
        return GanConfig.from_dict(ck["config"], path).validate(path)
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"invalid options in checkpoint: {e}", path) from None


def lr_factor(it: int, cfg: GanConfig) -> float:
    """Constant, then linear to 0 over the last ``decay_iters`` iterations (joliGEN 'linear')."""
    if not cfg.decay_iters:
        return 1.0
    start = cfg.iters - cfg.decay_iters
    return 1.0 - max(0, it - start) / (cfg.decay_iters + 1)


class GanTrainer:
    """A domain-transfer run: ``GanTrainer(source, target, out, cfg).run()``."""

    def __init__(self, source, target, out_dir, cfg: GanConfig | None, *, device=None, resume=False, save_every=500,
                 grid_every=500, grid_images=4, pairs=None, use_target_labels=True, progress=True,
                 explicit: dict | None = None):
        self.out = Path(out_dir)
        self.ckpt_path = self.out / "last.ckpt"
        ck = None
        if resume:
            ck = load_checkpoint(self.ckpt_path)
            old = check_checkpoint(ck, self.ckpt_path)
            changed = {k: (getattr(old, k), v) for k, v in (explicit or {}).items()
                       if k not in RESUMABLE and getattr(old, k) != v}
            if changed:
                raise ConfigError("options differ from the checkpoint being resumed: " + ", ".join(
                    f"{k} (checkpoint {a!r}, command line {b!r})" for k, (a, b) in changed.items()),
                    self.ckpt_path)
            cfg = GanConfig(**{**old.to_dict(), **{k: v for k, v in (explicit or {}).items() if k in RESUMABLE}})
        elif cfg is None:
            raise ConfigError("no options given and nothing to resume")
        self.cfg = cfg.validate()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.save_every, self.grid_every, self.progress = save_every, grid_every, progress
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)  # the fake pools

        self.data_cfg, src_imgs, src_labels = source_images(source)
        self.num_classes = self.data_cfg.classes
        tgt_imgs, tgt_labels = target_images(target, self.num_classes, use_target_labels)
        self.source_sampler = CropSampler(src_imgs, src_labels, cfg.crop, cfg.crop_delta, cfg.flip)
        self.target_sampler = CropSampler(tgt_imgs, tgt_labels, cfg.crop, cfg.crop_delta, cfg.flip)
        self.n_target_labelled = sum(lab is not None for lab in tgt_labels)
        self.grid_sources = src_imgs[:grid_images]
        self.pairs = pairs or {}
        self.source, self.target = str(source), str(target)

        dev = self.device
        self.G = build_generator(cfg).to(dev)
        self.F = PatchSampleMLP(self.G.feature_channels(cfg.nce_layers), cfg.nce_dim).to(dev)
        self.Ds = {n: (m.to(dev), mode) for n, (m, mode) in build_discriminators(cfg).items()}
        self.fs = SegNet(self.num_classes + 1, cfg.fs_ngf).to(dev)
        self.ema = ModelEMA(self.G, cfg.ema)
        self.d_params = [p for m, _ in self.Ds.values() for p in m.parameters() if p.requires_grad]
        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.AdamW([*self.G.parameters(), *self.F.parameters()], cfg.lr_g, betas, weight_decay=0)
        self.opt_D = torch.optim.AdamW(self.d_params, cfg.lr_d, betas, weight_decay=0)
        self.opt_fs = torch.optim.AdamW(self.fs.parameters(), cfg.lr_fs, betas, weight_decay=0)
        self.scaler = torch.amp.GradScaler("cuda") if (cfg.amp and dev.type == "cuda") else None
        self.pools = {n: ImagePool(cfg.pool_size) for n in self.Ds}
        self.detector_sha = (file_sha256(cfg.detector_weights)
                             if "projected" in cfg.net_d and cfg.detector_weights != "random" else None)
        self.iteration = 0
        self.last_fs = math.inf
        self.fs_pretrained = 0
        self.history: list[dict] = []
        if ck is not None:
            self._load_state(ck)

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict:
        return dict(kind=KIND, config=self.cfg.to_dict(), iteration=self.iteration, num_classes=self.num_classes,
                    source=self.source, target=self.target, detector_sha256=self.detector_sha or "",
                    G=self.G.state_dict(), G_ema=self.ema.model.state_dict(), F=self.F.state_dict(),
                    D={n: trainable_state(m) for n, (m, _) in self.Ds.items()}, fs=self.fs.state_dict(),
                    opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict(), opt_fs=self.opt_fs.state_dict(),
                    scaler=self.scaler.state_dict() if self.scaler else {},
                    pools={n: p.state() for n, p in self.pools.items()},
                    last_fs=self.last_fs if math.isfinite(self.last_fs) else -1.0, fs_pretrained=self.fs_pretrained,
                    rng=rng_state(), history=self.history)

    def save(self, path=None):
        save_checkpoint(path or self.ckpt_path, **self.state())
        atomic_write(self.out / "history.json", json.dumps(self.history))

    def _load_state(self, ck):
        p = self.ckpt_path
        if ck.get("num_classes") != self.num_classes:
            raise CheckpointError(f"checkpoint was trained with {ck.get('num_classes')} classes, the source "
                                  f"dataset has {self.num_classes}", p)
        if (ck.get("detector_sha256") or None) != self.detector_sha:
            raise CheckpointError(f"the detector weights {self.cfg.detector_weights} differ from the ones this "
                                  "run was trained with (SHA-256 mismatch)", p)
        load_module(self.G, ck["G"], "generator", p)
        load_module(self.ema.model, ck["G_ema"], "generator EMA", p)
        load_module(self.F, ck["F"], "PatchNCE heads", p)
        load_module(self.fs, ck["fs"], "f_s", p)
        if set(ck["D"]) != set(self.Ds):
            raise CheckpointError(f"checkpoint discriminators {sorted(ck['D'])} differ from {sorted(self.Ds)}", p)
        for n, (m, _) in self.Ds.items():
            load_module(m, ck["D"][n], f"discriminator {n}", p)
        try:
            self.opt_G.load_state_dict(ck["opt_G"])
            self.opt_D.load_state_dict(ck["opt_D"])
            self.opt_fs.load_state_dict(ck["opt_fs"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"optimizer state does not match: {e}", p) from None
        if self.scaler and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        for n, pool in self.pools.items():
            pool.load(ck["pools"][n], self.device)
        self.iteration = int(ck["iteration"])
        self.last_fs = ck["last_fs"] if ck["last_fs"] >= 0 else math.inf
        self.fs_pretrained = int(ck.get("fs_pretrained", 0))
        self.history = list(ck.get("history", []))
        set_rng_state(ck["rng"])

    # -- one iteration ----------------------------------------------------------------------------
    def autocast(self):
        if not self.cfg.amp:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _backward(self, loss):
        loss = loss / self.cfg.iter_size
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def nce(self, src, out):
        """Mean over layers of the PatchNCE loss between G's features of ``src`` and ``out``."""
        layers = self.cfg.nce_layers
        _, fk = self.G.encode(src, layers)
        _, fq = self.G.encode(out, layers)
        k, ids = self.F(fk, self.cfg.nce_patches)
        q, _ = self.F(fq, self.cfg.nce_patches, ids)
        return sum(patch_nce(qi, ki, src.shape[0], self.cfg.nce_T).mean() for qi, ki in zip(q, k)) / len(q)

    def fs_step(self, A, mA, B, mB, hasB) -> float:
        """Backpropagate f_s's loss on real images (fp32): CE on the source crops' box masks plus
        CE on the labelled target crops'; returns it (the semantic gate reads it)."""
        self.fs.requires_grad_(True)
        loss_fs = F.cross_entropy(self.fs(A), mA)
        if hasB.any():
            loss_fs = loss_fs + F.cross_entropy(self.fs(B[hasB]), mB[hasB])
        self.last_fs = float(loss_fs.detach())
        self._backward(loss_fs)
        return self.last_fs

    def pretrain_fs(self) -> float:
        """``fs_pretrain`` iterations that train f_s alone, before the GAN's first iteration.

        f_s learns only from real images and their box masks, so training it first changes
        no other network. joliGEN's runs are long enough (10^5 iterations) for the f_s loss to
        fall below ``sem_threshold`` early; a short CPU run is not (at 1500 iterations the
        loss was still 1.26 against the 1.0 gate, so the semantic terms never switched on)."""
        cfg, dev = self.cfg, self.device
        bar = tqdm(range(cfg.fs_pretrain), desc="f_s pretraining", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        avg = None
        for i in bar:
            A, mA, _ = (t.to(dev) for t in self.source_sampler.batch(cfg.batch))
            B, mB, hasB = (t.to(dev) for t in self.target_sampler.batch(cfg.batch))
            loss = self.fs_step(A, mA, B, mB, hasB)
            if not math.isfinite(loss):
                raise TrainingError(f"f_s loss is {loss} at pretraining iteration {i + 1}", self.out)
            avg = loss if avg is None else 0.95 * avg + 0.05 * loss
            if (i + 1) % cfg.iter_size == 0 or i + 1 == cfg.fs_pretrain:
                self.opt_fs.step()
                self.opt_fs.zero_grad(set_to_none=True)
            bar.set_postfix(fs=f"{avg:.3f}", refresh=False)
        bar.close()
        self.fs_pretrained = cfg.fs_pretrain  # all or nothing: a run killed mid-way pretrains again
        self.history.append({"iteration": 0, "fs_pretrain": cfg.fs_pretrain, "fs": round(avg, 5)})
        return avg

    def step(self) -> dict:
        cfg, dev = self.cfg, self.device
        A, mA, _ = (t.to(dev) for t in self.source_sampler.batch(cfg.batch))
        B, mB, hasB = (t.to(dev) for t in self.target_sampler.batch(cfg.batch))
        b = A.shape[0]
        use_idt = cfg.nce_idt or (cfg.sem_idt and cfg.lambda_sem > 0)
        sem_on = cfg.lambda_sem > 0 and self.iteration > 0 and self.last_fs <= cfg.sem_threshold
        logs = {}

        # 1-2: generator and PatchNCE heads
        for p in self.d_params:
            p.requires_grad_(False)
        self.fs.requires_grad_(False)
        with self.autocast():
            out = self.G(torch.cat([A, B]) if use_idt else A)
            fake, idt = out[:b], out[b:]
            loss_gan = sum(cfg.lambda_gan * g_loss(mode, D(fake)) for D, mode in self.Ds.values())
            loss_G = loss_gan
            logs["G_gan"] = float(loss_gan.detach())
            if cfg.lambda_nce > 0:
                nce = self.nce(A, fake)
                logs["nce"] = float(nce.detach())
                if cfg.nce_idt:
                    nce_idt = self.nce(B, idt)
                    logs["nce_idt"] = float(nce_idt.detach())
                    nce = 0.5 * (nce + nce_idt)
                loss_G = loss_G + cfg.lambda_nce * nce
            if sem_on:
                sem = F.cross_entropy(self.fs(fake).float(), mA)
                if cfg.sem_idt:
                    with torch.no_grad():
                        pseudo = self.fs(B).argmax(1)
                    target_mask = torch.where(hasB[:, None, None], mB, pseudo)
                    sem = sem + F.cross_entropy(self.fs(idt).float(), target_mask)
                logs["sem"] = float(sem.detach())
                loss_G = loss_G + cfg.lambda_sem * sem
        self._backward(loss_G)

        # 3: discriminators
        for p in self.d_params:
            p.requires_grad_(True)
        with self.autocast():
            loss_D = 0.0
            for n, (D, mode) in self.Ds.items():
                l = d_loss(mode, D(B), D(self.pools[n].query(fake.detach())))
                logs[f"D_{n}"] = float(l.detach())
                loss_D = loss_D + l
        self._backward(loss_D)

        # 4: f_s on real images, fp32
        logs["fs"] = self.fs_step(A, mA, B, mB, hasB)

        self.iteration += 1
        if self.iteration % cfg.iter_size == 0:
            f = lr_factor(self.iteration, cfg)
            for opt, lr in ((self.opt_G, cfg.lr_g), (self.opt_D, cfg.lr_d), (self.opt_fs, cfg.lr_fs)):
                for g in opt.param_groups:
                    g["lr"] = lr * f
                if self.scaler and opt is not self.opt_fs:
                    self.scaler.step(opt)
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
        self.ema.update(self.G)
        for k, v in logs.items():
            if not math.isfinite(v):
                raise TrainingError(f"loss {k} is {v} at iteration {self.iteration}: lower the learning rates "
                                    "or use fp32", self.out)
        return logs

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.G.train()
        for m, _ in self.Ds.values():
            m.train()
        self.fs.train()
        start, t0 = self.iteration, time.time()
        if self.iteration == 0 and self.fs_pretrained < self.cfg.fs_pretrain:
            self.pretrain_fs()
            self.save()
        bar = tqdm(total=self.cfg.iters, initial=self.iteration, desc="domain-transfer", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        avg: dict = {}
        while self.iteration < self.cfg.iters:
            logs = self.step()
            for k, v in logs.items():
                avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in avg.items()}, refresh=False)
            if self.iteration % 10 == 0 or self.iteration == self.cfg.iters:
                self.history.append({"iteration": self.iteration, **{k: round(v, 5) for k, v in avg.items()}})
            if self.grid_every and (self.iteration % self.grid_every == 0 or self.iteration == self.cfg.iters):
                self.write_grid()
            if self.iteration % self.save_every == 0 or self.iteration == self.cfg.iters:
                self.save()
        bar.close()
        if self.iteration == start:  # nothing to do (already finished): still leave a checkpoint
            self.save()
        secs = time.time() - t0
        return {"iterations": self.iteration, "trained": self.iteration - start, "seconds": secs,
                "s_per_iter": secs / max(1, self.iteration - start), "losses": avg, "checkpoint": str(self.ckpt_path)}

    # -- the picture --------------------------------------------------------------------------------
    def write_grid(self, path=None) -> Path:
        """The EMA generator's :func:`grid_image` of the first source images, written to
        ``path`` (default OUT/grid_NNNNNN.png)."""
        grid = grid_image(self.ema.model.eval(), self.grid_sources, self.cfg.crop * 2, self.pairs, self.device)
        self.G.train()
        return write_grid(path or self.out / f"grid_{self.iteration:06d}.png", grid)


@torch.no_grad()
def grid_image(G, sources, size: int, pairs: dict | None = None, device="cpu") -> np.ndarray:
    """RGB picture, one row per image of ``sources`` (longer side resized to ``size``):
    source | translated by G | generated share 1 - A_input | with ``pairs`` (resolved source
    path -> its render in the target domain, e.g. DriveSim's paired renders) that render."""
    rows = []
    for p in sources:
        img = read_image(p)
        h, w = img.shape[:2]
        k = size / max(h, w)
        img = cv2.resize(img, (max(4, round(w * k / 4) * 4), max(4, round(h * k / 4) * 4)),
                         interpolation=cv2.INTER_AREA)
        out, a_in = G(to_tensor(img)[None].to(device), return_attention=True)
        heat = cv2.applyColorMap(((1 - a_in[0]).clamp(0, 1) * 255).round().byte().cpu().numpy(),
                                 cv2.COLORMAP_INFERNO)[..., ::-1]
        cols = [img, to_image(out[0]), heat]
        if pairs:
            pair = pairs.get(str(Path(p).resolve()))
            cols.append(cv2.resize(read_image(pair), img.shape[1::-1], interpolation=cv2.INTER_AREA)
                        if pair is not None else np.zeros_like(img))
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cols], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    titles = ["source", "translated", "generated share", "target render"][: 4 if pairs else 3]
    header = np.full((22, width, 3), 255, np.uint8)
    col_w = rows[0].shape[1] // len(titles)
    for i, t in enumerate(titles):
        cv2.putText(header, t, (i * col_w + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, *rows], 0)


def write_grid(path, grid: np.ndarray) -> Path:
    """Write an RGB picture through a temporary name (format from the extension: .png, .jpg)."""
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix.lower() in (".jpg", ".jpeg") else []
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), params):
            raise DataError("cannot write the image grid", path)
    return path
