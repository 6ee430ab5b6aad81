"""`domain-transfer eval CKPT EXPERIMENT_DIR`: how close translations come to the target domain.

On a DriveSim experiment (``darknet-kd drivesim``), which renders every source training
scene also in the target domain (paired renders, never used for training):

* paired PSNR and SSIM of translated source images vs the true target render of the same
  scene, next to source vs target render (the floor a translation has to beat);
* KID (kernel inception distance, Binkowski et al. 2018: unbiased MMD^2 with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, mean and std over random subsets) between
  translated source and real target images, next to source vs target, on globally
  average-pooled features of a frozen detector backbone (the checkpoint's projector
  network unless ``--detector-cfg/--detector-weights`` are given; no Inception network
  can be downloaded here).

SSIM is Wang et al. 2004 (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, on 8-bit RGB,
mean over channels and pixels); PSNR on 8-bit RGB (peak 255), averaged over images.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from darknet_kd.data.darknet import read_list
from darknet_kd.errors import DataError
from darknet_kd.fileio import atomic_write

from .data import read_image, to_tensor
from .networks import build_backbone, default_proj_layers
from .translate import load_generator, translate_tensor


# ---------------------------------------------------------------- metrics

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of one shape (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5) of two uint8 images."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """(mean, std) of the unbiased MMD^2 with the cubic polynomial kernel over random subsets
    of features x (n, d) and y (m, d)."""
    n = min(len(x), len(y), subset_size)
    if n < 2:
        raise ValueError("KID needs at least 2 samples a side")
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), n, replace=False)].astype(np.float64)
        b = y[rng.choice(len(y), n, replace=False)].astype(np.float64)
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        m = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
        vals.append(m)
    return float(np.mean(vals)), float(np.std(vals))


class BackboneFeatures:
    """Global-average-pooled features of a frozen Darknet backbone (concatenated over layers)."""

    def __init__(self, cfg_path, weights, layers=None, size: int = 0, device="cpu"):
        self.model = build_backbone(cfg_path, weights).to(device)
        self.layers = list(layers or default_proj_layers(self.model))
        self.size = size or self.model.net.width
        self.device = device

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA))
        x = x.permute(2, 0, 1)[None].float().div(255).to(self.device)
        _, feats = self.model(x, keep=self.layers, raw=True)
        return torch.cat([F.adaptive_avg_pool2d(feats[i], 1).flatten() for i in self.layers]).cpu().numpy()


# ---------------------------------------------------------------- DriveSim experiment layout

def _manifest(exp_dir) -> dict:
    path = Path(exp_dir) / "manifest.json"
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("not a DriveSim experiment (no manifest.json)", exp_dir) from None
    except (OSError, ValueError) as e:
        raise DataError(f"unreadable DriveSim manifest: {e}", path) from None
    if not isinstance(m, dict) or not m.get("target_domains"):
        raise DataError("DriveSim manifest without target_domains", path)
    return m


def target_domain(exp_dir, domain: str | None = None) -> str:
    """The DriveSim target domain to evaluate (default: the experiment's first)."""
    m = _manifest(exp_dir)
    if domain is None:
        return m["target_domains"][0]
    if domain not in m["target_domains"]:
        raise DataError(f"domain {domain!r} is not a target of this experiment ({m['target_domains']})",
                        Path(exp_dir) / "manifest.json")
    return domain


def drivesim_pairs(exp_dir, domain: str | None = None):
    """[(source training image, its render in the target domain)] of a DriveSim experiment:
    ``source-train.txt`` and ``paired-D-train.txt`` are parallel lists of the same scenes."""
    exp = Path(exp_dir)
    d = target_domain(exp, domain)
    src, ref = read_list(exp / "source-train.txt"), read_list(exp / f"paired-{d}-train.txt")
    if len(src) != len(ref):
        raise DataError(f"paired-{d}-train.txt has {len(ref)} images, source-train.txt {len(src)}", exp)
    return [(str(Path(a).resolve()), str(Path(b).resolve())) for a, b in zip(src, ref)]


def drivesim_target_images(exp_dir, domain: str | None = None) -> list[Path]:
    """Real target images for the KID reference: the target test split (never seen in training)."""
    exp = Path(exp_dir)
    return read_list(exp / f"{target_domain(exp, domain)}-test.txt")


# ---------------------------------------------------------------- the command

def evaluate(ckpt, exp_dir, limit: int = 0, ema: bool = True, detector_cfg=None, detector_weights=None,
             device=None, amp: bool = False, progress: bool = True, domain: str | None = None) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G, cfg, _ = load_generator(ckpt, ema, device)
    pairs = drivesim_pairs(exp_dir, domain)
    if not pairs:
        raise DataError("no paired target renders found", exp_dir)
    if limit:
        pairs = pairs[:limit]
    feats = BackboneFeatures(detector_cfg or cfg.detector_cfg, detector_weights or cfg.detector_weights,
                             cfg.proj_layers or None, device=device)
    rows = {"psnr_src": [], "psnr_tr": [], "ssim_src": [], "ssim_tr": []}
    f_src, f_tr = [], []
    for src, ref in tqdm(pairs, desc="eval", unit="img", disable=not progress, dynamic_ncols=True):
        a, r = read_image(src), read_image(ref)
        if a.shape != r.shape:
            raise DataError(f"paired render has size {r.shape[1]}x{r.shape[0]}, source {a.shape[1]}x{a.shape[0]}",
                            ref)
        t = translate_tensor(G, to_tensor(a)[None].to(device), amp=amp)[0]
        tr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        rows["psnr_src"].append(psnr(a, r))
        rows["psnr_tr"].append(psnr(tr, r))
        rows["ssim_src"].append(ssim(a, r))
        rows["ssim_tr"].append(ssim(tr, r))
        f_src.append(feats(a))
        f_tr.append(feats(tr))
    targets = drivesim_target_images(exp_dir, domain)
    if limit:
        targets = targets[:max(limit, 2)]
    f_tgt = [feats(read_image(p)) for p in tqdm(targets, desc="target features", unit="img",
                                                  disable=not progress, dynamic_ncols=True)]
    f_src, f_tr, f_tgt = np.stack(f_src), np.stack(f_tr), np.stack(f_tgt)
    kid_src, kid_src_std = kid(f_src, f_tgt)
    kid_tr, kid_tr_std = kid(f_tr, f_tgt)
    return {"images": len(pairs), "target_images": len(targets),
            "psnr_source": float(np.mean(rows["psnr_src"])), "psnr_translated": float(np.mean(rows["psnr_tr"])),
            "ssim_source": float(np.mean(rows["ssim_src"])), "ssim_translated": float(np.mean(rows["ssim_tr"])),
            "kid_source": kid_src, "kid_source_std": kid_src_std, "kid_translated": kid_tr,
            "kid_translated_std": kid_tr_std,
            "kid_features": f"{Path(detector_cfg or cfg.detector_cfg).name} "
                            f"({detector_weights or cfg.detector_weights}) layers {feats.layers}"}


def add_parser(sub):
    p = sub.add_parser("eval", help="paired PSNR/SSIM and KID of translations on a DriveSim experiment")
    p.add_argument("ckpt")
    p.add_argument("experiment", help="DriveSim experiment folder (darknet-kd drivesim OUT)")
    p.add_argument("--domain", default=None, help="target domain (default: the experiment's first)")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N pairs only")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--detector-cfg", default=None, help="KID feature network (default: the checkpoint's)")
    p.add_argument("--detector-weights", default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args):
    r = evaluate(args.ckpt, args.experiment, args.limit, not args.no_ema, args.detector_cfg, args.detector_weights,
                 args.device, args.amp, not args.no_progress, args.domain)
    print(f"pairs {r['images']}, target images {r['target_images']}")
    print(f"{'':12s}{'PSNR dB':>10s}{'SSIM':>10s}{'KID x100':>12s}")
    print(f"{'source':12s}{r['psnr_source']:10.2f}{r['ssim_source']:10.4f}{100 * r['kid_source']:12.3f}")
    print(f"{'translated':12s}{r['psnr_translated']:10.2f}{r['ssim_translated']:10.4f}{100 * r['kid_translated']:12.3f}")
    print(f"KID features: {r['kid_features']}")
    if args.json:
        atomic_write(args.json, json.dumps(r, indent=1))
    return 0
