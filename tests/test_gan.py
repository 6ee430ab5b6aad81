"""domain_transfer: networks, losses, training steps, checkpoints/resume, translation, metrics."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.data.check import check_dataset
from darknet_kd.data.darknet import label_path, read_list, write_data_file, write_labels, write_list, write_names
from darknet_kd.errors import CheckpointError, DarknetKDError, DataError
from darknet_kd.model import Darknet
from darknet_kd.model.weights import randomize
from darknet_kd.train.trainer import ModelEMA
from domain_transfer import cli
from domain_transfer.config import ConfigError, GanConfig, preset
from domain_transfer.data import CropSampler, box_mask, pick_crop
from domain_transfer.evaluate import kid, psnr, ssim
from domain_transfer.losses import ImagePool, d_loss, g_loss, patch_nce
from domain_transfer.networks import (AttnGenerator, MultiScalePatchGAN, PatchSampleMLP, ProjectedDiscriminator,
                                      SegNet, build_backbone, default_proj_layers)
from domain_transfer.train import GanTrainer
from domain_transfer.translate import translate_dataset, translate_tensor

ROOT = Path(__file__).resolve().parent.parent
DRIVESIM_CFG = ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"

torch.set_num_threads(1)


# ---------------------------------------------------------------- small datasets

def make_dataset(root: Path, n: int, night: bool, labels: bool = True, size=(72, 56), seed=0):
    """Flat-colour images with 1-3 coloured rectangles (class 0 red, 1 green) and their labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = size
        img = np.full((h, w, 3), (40, 30, 30) if night else (200, 180, 150), np.uint8)
        labs = []
        for _ in range(rng.integers(1, 4)):
            bw, bh = int(rng.integers(6, 24)), int(rng.integers(6, 20))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            c = int(rng.integers(0, 2))
            col = ((0, 0, 255), (0, 255, 0))[c]
            if night:
                col = tuple(v // 3 + 20 for v in col)
            cv2.rectangle(img, (x0, y0), (x0 + bw - 1, y0 + bh - 1), col, -1)
            labs.append((c, (x0 + bw / 2) / w, (y0 + bh / 2) / h, bw / w, bh / h))
        p = root / "images" / f"{i:03d}.png"
        cv2.imwrite(str(p), img)
        if labels:
            write_labels(label_path(p), np.array(labs))
        paths.append(p)
    write_list(root / "train.txt", paths)
    write_list(root / "valid.txt", paths[:2])
    write_names(root / "obj.names", ["red", "green"])
    write_data_file(root / "obj.data", {"classes": 2, "train": root / "train.txt", "valid": root / "valid.txt",
                                        "names": root / "obj.names"})
    return root / "obj.data", root / "train.txt"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gan_data")
    src, _ = make_dataset(d / "src", 6, night=False, seed=1)
    _, tgt = make_dataset(d / "tgt", 6, night=True, labels=True, seed=2)
    # half of the target images unlabelled
    for p in read_list(tgt)[:3]:
        label_path(p).unlink()
    return src, tgt


def tiny(**kw) -> GanConfig:
    base = dict(ngf=4, blocks=2, crop=32, crop_delta=8, ndf=4, d_layers=2, fs_ngf=4, nce_layers=[0, 2, 3, 5],
                nce_patches=16, nce_dim=8, proj_channels=4, batch=2, iter_size=2, iters=4, pool_size=3,
                net_d=["patch"], amp=False, ema=0.9, detector_cfg=str(DRIVESIM_CFG))
    base.update(kw)
    return GanConfig(**base).validate()


def trainer(data, out, cfg, **kw):
    src, tgt = data
    return GanTrainer(src, tgt, out, cfg, device="cpu", progress=False, grid_every=0, save_every=1000, **kw)


# ---------------------------------------------------------------- networks

def test_generator_shapes_attention_and_features():
    torch.manual_seed(0)
    G = AttnGenerator(ngf=4, blocks=3, padding="reflect", attn_masks=5)
    x = torch.rand(2, 3, 30, 42) * 2 - 1  # not a multiple of 4: padded and cropped back
    y, a_in = G(x, return_attention=True)
    assert y.shape == x.shape and a_in.shape == (2, 30, 42)
    assert ((a_in > 0) & (a_in < 1)).all()
    # the output is a convex blend of tanh images and the input: within [-1, 1]
    assert y.abs().max() <= 1 + 1e-5
    # attention all on the input mask -> identity
    with torch.no_grad():
        G.attention[-1].bias[-1] = 50.0
    assert torch.allclose(G(x), x, atol=1e-5)
    _, feats = G.encode(torch.rand(1, 3, 32, 32), [0, 1, 2, 3, 4, 6])
    assert [f.shape[1:] for f in feats] == [(3, 32, 32), (4, 32, 32), (8, 16, 16), (16, 8, 8), (16, 8, 8),
                                            (16, 8, 8)]
    assert G.feature_channels([0, 1, 2, 3, 6]) == [3, 4, 8, 16, 16]
    for pad in ("zeros", "replicate"):
        assert AttnGenerator(4, 1, pad)(x).shape == x.shape


def test_generator_default_is_mobile_resnet_attn_size():
    # joliGEN's mobile_resnet_attn with ngf 128, 9 blocks, 10 masks has 9.43M parameters (facts: joligen.md)
    n = sum(p.numel() for p in AttnGenerator(128, 9).parameters())
    assert abs(n - 9.43e6) < 0.02e6, n


def test_patchgan_and_segnet_shapes():
    D = MultiScalePatchGAN(ndf=4, n_layers=3, scales=2)
    outs = D(torch.rand(2, 3, 64, 64))
    assert [o.shape for o in outs] == [(2, 1, 6, 6), (2, 1, 2, 2)]
    S = SegNet(3, 4)
    assert S(torch.rand(2, 3, 36, 44)).shape == (2, 3, 36, 44)


def test_projected_discriminator_frozen_backbone():
    bb = build_backbone(DRIVESIM_CFG, "random", seed=3)
    assert default_proj_layers(bb) == [8, 16, 24, 28]  # strides 4, 8, 16, 32 of yolov4-tiny
    D = ProjectedDiscriminator(bb, [8, 16, 24, 28], input_size=64, cout=4)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    outs = D(x)
    assert len(outs) == 4 and all(o.shape[:2] == (2, 1) for o in outs)
    sum(o.mean() for o in outs).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0   # gradients reach the generator
    assert all(p.grad is None for p in D.backbone.parameters())  # the backbone stays frozen
    assert all(p.grad is None for p in D.ccm.parameters())       # so does the random projection
    assert all(p.grad is not None for p in D.heads.parameters())
    D.train()
    assert not D.backbone.training  # BN statistics stay frozen
    # the backbone features are the Darknet model's own layer outputs, on (x + 1) / 2
    full = build_backbone(DRIVESIM_CFG, "random", seed=3)
    _, ref = full(((x.detach() + 1) / 2), keep=[16], raw=True)
    assert torch.allclose(D.features(x.detach())[1], ref[16], atol=1e-5)


def test_patch_sample_mlp_shares_positions():
    torch.manual_seed(0)
    F = PatchSampleMLP([3, 8], nc=16)
    f0 = torch.randn(1, 3, 6, 6)
    feats = [f0.repeat(2, 1, 1, 1), torch.randn(2, 8, 4, 4)]
    out, ids = F(feats, num_patches=10)
    assert [o.shape for o in out] == [(20, 16), (20, 16)]  # 10 positions an image, batch 2
    assert torch.allclose(out[0].norm(dim=1), torch.ones(20))
    assert torch.allclose(out[0][:10], out[0][10:])  # the same positions in every image of the batch
    again, _ = F(feats, num_patches=10, patch_ids=ids)
    assert torch.equal(again[0], out[0])
    pos = ids[0][3]  # row 3 is the MLP of the feature vector at position ids[0][3]
    ref = torch.nn.functional.normalize(F.heads[0](f0.flatten(2)[0, :, pos]), dim=0)
    assert torch.allclose(out[0][3], ref, atol=1e-6)


# ---------------------------------------------------------------- losses

def test_patch_nce_hand_computed():
    T = 0.07
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    got = patch_nce(q, k, batch=1, T=T)
    # position 0: positive q0.k0 = 0.6, negatives: q0.k1 = 1 (the diagonal q0.k0 is masked to -10)
    # position 1: positive q1.k1 = 0,   negatives: q1.k0 = 0.8
    l0 = -0.6 / T + math.log(math.exp(0.6 / T) + math.exp(-10 / T) + math.exp(1 / T))
    l1 = -0.0 / T + math.log(math.exp(0.0) + math.exp(0.8 / T) + math.exp(-10 / T))
    assert torch.allclose(got, torch.tensor([l0, l1]), rtol=1e-5)


def test_patch_nce_negatives_stay_within_image_and_keys_are_detached():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    both = patch_nce(q, k, batch=2)
    # batch 2 = two independent images of 3 positions each
    assert torch.allclose(both, torch.cat([patch_nce(q[:3], k[:3], 1), patch_nce(q[3:], k[3:], 1)]))
    both.mean().backward()
    assert q.grad.abs().sum() > 0 and k.grad is None
    # perfect matches with orthogonal negatives give a small loss, swapped keys a large one
    e = torch.eye(4)
    assert patch_nce(e, e, 1).max() < 1e-3 and patch_nce(e, e.flip(0), 1).min() > 10


def test_gan_losses_values():
    one, zero = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert d_loss("lsgan", one, zero) == 0 and d_loss("lsgan", zero, one) == 1
    assert g_loss("lsgan", one) == 0 and g_loss("lsgan", [zero, zero]) == 1
    assert d_loss("hinge", 2 * one, -2 * one) == 0
    assert torch.isclose(d_loss("hinge", zero, zero), torch.tensor(1.0))
    assert torch.isclose(g_loss("hinge", [one * 3, zero - 1]), torch.tensor(-1.0))  # mean over scales
    with pytest.raises(ValueError):
        d_loss("wgan", one, zero)


def test_image_pool():
    import random
    random.seed(0)
    pool = ImagePool(2)
    a, b, c = (torch.full((1, 3, 2, 2), float(v)) for v in (1, 2, 3))
    assert torch.equal(pool.query(a), a) and torch.equal(pool.query(b), b)
    outs = {float(pool.query(c)[0, 0, 0, 0]) for _ in range(30)}
    assert outs <= {1.0, 2.0, 3.0} and len(outs) > 1  # old fakes come back
    st = pool.state()
    p2 = ImagePool(2)
    p2.load(st, "cpu")
    assert torch.equal(p2.state(), st)


def test_ema_update_rule():
    torch.manual_seed(0)
    G = AttnGenerator(4, 1)
    ema = ModelEMA(G, 0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
    ema.update(G)
    for k, v in ema.model.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * G.state_dict()[k], atol=1e-6)


# ---------------------------------------------------------------- data

def test_online_crops_keep_the_box_inside():
    rng = np.random.RandomState(0)
    for _ in range(300):
        W, H = rng.randint(20, 300, size=2)
        bw, bh = rng.randint(1, W + 1), rng.randint(1, H + 1)
        x0, y0 = rng.randint(0, W - bw + 1), rng.randint(0, H - bh + 1)
        box = np.array([[x0, y0, x0 + bw, y0 + bh]], float)
        cx, cy, s = pick_crop(W, H, box, 64, 16, rng)
        assert s >= max(bw, bh) and (s <= 80 or s == max(bw, bh))
        assert cx <= x0 and cx + s >= x0 + bw and cy <= y0 and cy + s >= y0 + bh  # box inside the crop
        if s <= W:
            assert 0 <= cx <= W - s  # crop inside the image when it fits
        else:
            assert cx <= 0 and cx + s >= W  # image inside the crop otherwise
    mask = box_mask(np.array([[1, 0.5, 0.5, 0.5, 0.5], [0, 0.5, 0.5, 0.2, 0.2]]), 100, 100)
    assert mask[50, 50] == 1 and mask[30, 30] == 2 and mask[5, 5] == 0  # small box painted last
    region = box_mask(np.array([[1, 0.5, 0.5, 0.5, 0.5]]), 100, 100, (50, 50, 40))
    assert region.shape == (40, 40) and region[:25, :25].min() == 2 and region[25:, 25:].max() == 0


def test_crop_sampler_masks_follow_the_objects(data):
    src, _ = data
    from domain_transfer.data import source_images
    _, imgs, labels = source_images(src)
    np.random.seed(0)
    s = CropSampler(imgs, labels, 32, 8, flip=True)
    for _ in range(20):
        x, m, lab = s.sample()
        assert x.shape == (3, 32, 32) and m.shape == (32, 32) and lab
        assert -1 <= x.min() and x.max() <= 1 and m.max() >= 1  # the crop holds an object
        # red objects (class 0 -> mask 1) are red in the image, green ones green
        rgb = (x.permute(1, 2, 0).numpy() + 1) * 127.5
        for cls, channel in ((1, 0), (2, 1)):
            inner = m.numpy() == cls
            inner = cv2.erode(inner.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.any():
                assert rgb[inner][:, channel].mean() > 200


# ---------------------------------------------------------------- config

def test_config_errors():
    with pytest.raises(ConfigError, match="nce layer 9"):
        GanConfig(blocks=2, nce_layers=[0, 9]).validate()
    with pytest.raises(ConfigError, match="too small for a PatchGAN"):
        GanConfig(crop=32, crop_delta=8, d_scales=2).validate()
    with pytest.raises(ConfigError, match="multiple of 4"):
        GanConfig(crop=130, crop_delta=8).validate()
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("tpu")
    with pytest.raises(ConfigError, match="unknown options"):
        GanConfig.from_dict({"ngf": 4, "colour": 1})
    assert isinstance(ConfigError("x"), DarknetKDError)
    g = preset("gpu")
    assert (g.ngf, g.blocks, g.crop, g.crop_delta, g.iter_size, g.lr_g, g.lr_d, g.lambda_sem, g.nce_T,
            g.nce_patches) == (128, 9, 256, 64, 8, 2e-4, 1e-4, 10.0, 0.07, 256)


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("kw", [
    dict(net_d=["patch"], gan_mode_patch="lsgan"),
    dict(net_d=["patch"], gan_mode_patch="hinge", d_scales=2, crop=48, nce_idt=False),
    dict(net_d=["projected"], gan_mode_projected="hinge", lambda_nce=0.0, nce_layers=[]),
    dict(net_d=["projected", "patch"], amp=True),
], ids=["lsgan-patch", "hinge-2scales-no-idt", "projected-no-nce", "both-bf16"])
def test_every_loss_gives_a_finite_step(data, tmp_path, kw):
    torch.manual_seed(0)
    t = trainer(data, tmp_path, tiny(sem_threshold=100.0, **kw))
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    d0 = [p.detach().clone() for p in t.d_params]
    logs1 = t.step()
    assert "sem" not in logs1  # the semantic terms are off at the first iteration
    logs2 = t.step()            # iter_size 2: the optimisers step now
    assert all(math.isfinite(v) for v in (*logs1.values(), *logs2.values()))
    assert "sem" in logs2 and logs2["sem"] > 0 and logs2["fs"] > 0
    assert ("nce" in logs2) == (t.cfg.lambda_nce > 0)
    assert ("nce_idt" in logs2) == (t.cfg.lambda_nce > 0 and t.cfg.nce_idt)
    for n in t.cfg.net_d:
        assert f"D_{n}" in logs2
    assert any(not torch.equal(v, t.G.state_dict()[k]) for k, v in g0.items())
    assert sum(not torch.equal(a, b) for a, b in zip(d0, t.d_params)) > len(d0) // 2


def test_semantic_gate_follows_fs_loss(data, tmp_path):
    t = trainer(data, tmp_path, tiny(sem_threshold=1e-6, iter_size=1))
    t.step()
    assert "sem" not in t.step()  # the f_s loss is far above the threshold
    t.last_fs = 0.0  # as if f_s had converged
    assert "sem" in t.step()


def test_fs_pretraining_trains_fs_alone_once(data, tmp_path):
    cfg = tiny(iters=1, iter_size=2, fs_pretrain=6, sem_threshold=100.0)
    t = trainer(data, tmp_path, cfg)
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    fs0 = {k: v.clone() for k, v in t.fs.state_dict().items()}
    t.pretrain_fs()
    assert t.fs_pretrained == 6 and math.isfinite(t.last_fs)
    assert all(torch.equal(v, t.G.state_dict()[k]) for k, v in g0.items())      # G untouched
    assert any(not torch.equal(v, t.fs.state_dict()[k]) for k, v in fs0.items())  # f_s stepped
    assert all(p.grad is None for p in t.fs.parameters())  # 6 = 3 full accumulations: nothing left over
    t.save()
    resumed = trainer(data, tmp_path, cfg, resume=True)
    assert resumed.fs_pretrained == 6
    fs1 = {k: v.clone() for k, v in resumed.fs.state_dict().items()}
    resumed.run()  # iteration 1 == iters: nothing left, and no second pretraining
    assert all(torch.equal(v, resumed.fs.state_dict()[k]) for k, v in fs1.items())
    with pytest.raises(ConfigError, match="fs_pretrain"):
        tiny(fs_pretrain=-1)


def test_fs_pretraining_opens_the_semantic_gate(data, tmp_path):
    # f_s must get below the gate within the pretraining budget, so the GAN's second iteration
    # (the first is always off) has semantic terms; without pretraining it stays shut
    cfg = tiny(iter_size=1, fs_pretrain=300, sem_threshold=1.0, lr_fs=2e-3)
    t = trainer(data, tmp_path, cfg)
    t.pretrain_fs()
    assert t.last_fs < 1.0
    t.step()
    assert "sem" in t.step()
    t2 = trainer(data, tmp_path / "b", GanConfig(**{**cfg.to_dict(), "fs_pretrain": 0}))
    t2.step()
    assert "sem" not in t2.step()


def test_gradient_accumulation_steps_every_iter_size(data, tmp_path):
    t = trainer(data, tmp_path, tiny(iter_size=3))
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.step()
    t.step()
    assert all(torch.equal(v, t.G.state_dict()[k]) for k, v in g0.items())  # accumulating
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.G.parameters())
    t.step()
    assert any(not torch.equal(v, t.G.state_dict()[k]) for k, v in g0.items())
    assert all(p.grad is None for p in t.G.parameters())


def test_checkpoint_round_trip_and_exact_resume(data, tmp_path):
    cfg = tiny(net_d=["projected", "patch"], iters=4, sem_threshold=100.0)
    torch.manual_seed(0)
    straight = trainer(data, tmp_path / "a", cfg)
    straight.run()
    torch.manual_seed(0)
    first = trainer(data, tmp_path / "b", GanConfig(**{**cfg.to_dict(), "iters": 2}))
    first.run()
    ck = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)  # plain data only
    assert ck["iteration"] == 2 and ck["kind"] == "domain-transfer"
    assert not any(k.startswith("backbone.") for k in ck["D"]["projected"])  # rebuilt from the detector files
    resumed = trainer(data, tmp_path / "b", cfg, resume=True, explicit={"iters": 4})
    assert resumed.iteration == 2
    resumed.run()
    for name in ("G", "F", "fs"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    for k, v in straight.ema.model.state_dict().items():
        assert torch.equal(v, resumed.ema.model.state_dict()[k])
    for n in straight.Ds:
        a, b = straight.Ds[n][0].state_dict(), resumed.Ds[n][0].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_options_and_detector(data, tmp_path):
    wpath = tmp_path / "det.weights"
    m = Darknet.from_cfg(DRIVESIM_CFG)
    randomize(m, 1)
    m.save_weights(wpath)
    cfg = tiny(net_d=["projected"], iters=1, detector_weights=str(wpath))
    trainer(data, tmp_path / "r", cfg).run()
    with pytest.raises(ConfigError, match=r"ngf \(checkpoint 4, command line 8\)"):
        trainer(data, tmp_path / "r", cfg, resume=True, explicit={"ngf": 8})
    randomize(m, 2)
    m.save_weights(wpath)
    with pytest.raises(CheckpointError, match="SHA-256"):
        trainer(data, tmp_path / "r", cfg, resume=True, explicit={"iters": 2})
    with pytest.raises(CheckpointError, match="not found"):
        trainer(data, tmp_path / "nothing", cfg, resume=True)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_checkpoints_give_clear_errors(data, tmp_path):
    from darknet_kd.train.checkpoint import save_checkpoint
    from domain_transfer.translate import load_generator

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x04not a checkpoint")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"format": "darknet-kd-checkpoint/1", "obj": ConfigError("x")}, pickled)
    other = tmp_path / "other.ckpt"
    save_checkpoint(other, kind="train", model={})
    t = trainer(data, tmp_path / "run", tiny(iters=1))
    t.run()
    state = t.state()
    state["config"]["ngf"] = 8  # the stored weights were made with ngf 4
    wrong = tmp_path / "wrong.ckpt"
    save_checkpoint(wrong, **state)
    state["config"]["crop"] = 30
    invalid = tmp_path / "invalid.ckpt"
    save_checkpoint(invalid, **state)
    for path, msg in ((garbage, "not a darknet-kd checkpoint"), (pickled, "unsafe"),
                      (other, "not a domain-transfer checkpoint"), (wrong, "generator does not match"),
                      (invalid, "multiple of 4"), (tmp_path / "missing.ckpt", "not found")):
        with pytest.raises(CheckpointError, match=msg) as e:
            load_generator(path)
        assert str(path) in str(e.value)


def test_grid_image(data, tmp_path):
    src, _ = data
    t = trainer(data, tmp_path, tiny(iters=1), pairs=None)
    p = t.write_grid()
    g = cv2.imread(str(p))
    assert g is not None and g.shape[1] >= 3 * 64  # source | translated | attention
    imgs = read_list(src.parent / "train.txt")
    t.pairs = {str(imgs[0].resolve()): str(imgs[1])}
    g4 = cv2.imread(str(t.write_grid(tmp_path / "g4.png")))
    assert g4.shape[1] > g.shape[1]  # + the target render column


# ---------------------------------------------------------------- translation

def test_tiled_translation_blends_exactly():
    x = torch.rand(1, 3, 70, 90) * 2 - 1

    def G(t):  # pointwise: tiles and the whole image agree exactly
        return torch.tanh(t * 1.5 + 0.1)

    full = translate_tensor(G, x)
    tiled = translate_tensor(G, x, tile=32, overlap=8)
    assert torch.allclose(full, tiled, atol=1e-6)


def test_translate_writes_a_darknet_dataset(data, tmp_path):
    src, tgt = data
    t = trainer(data, tmp_path / "run", tiny(iters=2))
    t.run()
    ck = tmp_path / "run" / "last.ckpt"
    out = tmp_path / "translated"
    s = translate_dataset(ck, src, out, progress=False)
    assert s["translated"] == 6 and s["skipped"] == 0
    errors, stats = check_dataset(s["data"], decode=True, out=open("/dev/null", "w"))
    assert errors == [] and stats["train"].images == 6 and stats["valid"].images == 2
    src_imgs = read_list(src.parent / "train.txt")
    new_imgs = read_list(out / "train.txt")
    assert len(new_imgs) == len(src_imgs)
    for a, b in zip(src_imgs, new_imgs):
        assert label_path(a).read_bytes() == label_path(b).read_bytes()
        ia, ib = cv2.imread(str(a)), cv2.imread(str(b))
        assert ia.shape == ib.shape and not np.array_equal(ia, ib)
    # resumable: a rerun skips finished images and redoes a missing one
    new_imgs[3].unlink()
    s2 = translate_dataset(ck, src, out, progress=False)
    assert (s2["translated"], s2["skipped"]) == (1, 5)
    # another checkpoint is refused unless --overwrite
    t.step()
    t.save(tmp_path / "run" / "other.ckpt")
    with pytest.raises(ConfigError, match="another checkpoint"):
        translate_dataset(tmp_path / "run" / "other.ckpt", src, out, progress=False)
    s3 = translate_dataset(tmp_path / "run" / "other.ckpt", src, out, overwrite=True, progress=False)
    assert s3["translated"] == 6


def test_translate_to_a_relative_folder_writes_lists_that_work_from_anywhere(data, tmp_path, monkeypatch):
    src, _ = data
    t = trainer(data, tmp_path / "run", tiny(iters=1))
    t.run()
    monkeypatch.chdir(tmp_path)
    s = translate_dataset(tmp_path / "run" / "last.ckpt", src, "rel", lists=["train"], progress=False)
    lines = (tmp_path / "rel" / "train.txt").read_text().split()
    assert len(lines) == 6 and all(ln.startswith("images/") for ln in lines)   # relative to the list, not the cwd
    monkeypatch.chdir(tmp_path / "run")
    assert all(p.exists() for p in read_list(tmp_path / "rel" / "train.txt"))
    assert Path(s["data"]).is_absolute()


def test_gan_downstream_reuses_only_a_finished_translation_of_the_same_checkpoint(data, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("gan_downstream", ROOT / "scripts" / "gan_downstream.py")
    gd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gd)
    src, _ = data
    t = trainer(data, tmp_path / "run", tiny(iters=1))
    t.run()
    ck = tmp_path / "run" / "last.ckpt"
    out = tmp_path / "translated"
    s = translate_dataset(ck, src, out, lists=["train"], progress=False)
    assert gd.reused_translation(out, ck, src) == Path(s["data"]) == out / "obj.data"
    t.step()
    t.save(tmp_path / "run" / "other.ckpt")
    with pytest.raises(ValueError, match="another checkpoint"):
        gd.reused_translation(out, tmp_path / "run" / "other.ckpt", src)
    other_src = tmp_path / "obj.data"
    other_src.write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="translates .*, not"):
        gd.reused_translation(out, ck, other_src)
    (out / "obj.data").unlink()
    with pytest.raises(ValueError, match="has not finished"):
        gd.reused_translation(out, ck, src)
    with pytest.raises(ValueError, match="not a domain-transfer translation"):
        gd.reused_translation(tmp_path / "run", ck, src)


def test_translate_rejects_bad_source_labels(data, tmp_path):
    src, _ = data
    bad_root = tmp_path / "bad"
    data_path, lst = make_dataset(bad_root, 2, night=False)
    label_path(read_list(lst)[1]).write_text("0 0.5 0.5 0.2\n")
    t = trainer(data, tmp_path / "run", tiny(iters=1))
    t.run()
    with pytest.raises(DataError, match=r"001.txt:1: expected 5 fields"):
        translate_dataset(tmp_path / "run" / "last.ckpt", data_path, tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "images").exists()  # nothing written


def test_cli_train_translate_and_errors(data, tmp_path, capsys):
    src, tgt = data
    run = tmp_path / "cli"
    args = ["train", "--source", str(src), "--target", str(tgt), "--out", str(run), "--no-progress",
            "--ngf", "4", "--blocks", "1", "--crop", "32", "--crop-delta", "4", "--ndf", "4", "--d-layers", "2",
            "--fs-ngf", "4", "--nce-layers", "0,2,4", "--nce-patches", "8", "--nce-dim", "8", "--net-d", "patch",
            "--iters", "2", "--iter-size", "1", "--batch", "1", "--grid-every", "2", "--amp", "off"]
    assert cli.main(args) == 0
    assert (run / "last.ckpt").exists() and (run / "grid_000002.png").exists()
    assert cli.main(["translate", str(run / "last.ckpt"), str(src), str(tmp_path / "tr"), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--source", str(src), "--target", str(tgt), "--out", str(run), "--resume",
                     "--blocks", "3", "--no-progress"]) == 2
    assert "blocks (checkpoint 1, command line 3)" in capsys.readouterr().err
    assert cli.main(["translate", str(tgt), str(src), str(tmp_path / "x")]) == 2
    assert "not a darknet-kd checkpoint" in capsys.readouterr().err
    assert cli.main(["translate", str(tmp_path / "missing.ckpt"), str(src), str(tmp_path / "x")]) == 2
    assert "missing.ckpt: checkpoint not found" in capsys.readouterr().err


# ---------------------------------------------------------------- metrics

def test_metrics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert psnr(a, a) == math.inf
    mse = np.mean((a.astype(float) - b) ** 2)
    assert math.isclose(psnr(a, b), 10 * math.log10(255 ** 2 / mse))
    assert math.isclose(ssim(a, a), 1.0)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < ssim(a, b) < 1
    x = rng.normal(size=(200, 8))
    y = rng.normal(size=(200, 8))
    z = rng.normal(1.0, 1.0, size=(200, 8))
    same, _ = kid(x, y, subsets=20, subset_size=100)
    far, _ = kid(x, z, subsets=20, subset_size=100)
    assert abs(same) < 0.05 and far > 10 * abs(same) and far > 0.1


# ---------------------------------------------------------------- DriveSim evaluation

def test_eval_on_drivesim(tmp_path):
    from darknet_kd.data.drivesim import generate
    from darknet_kd.train.checkpoint import save_checkpoint
    from domain_transfer.evaluate import drivesim_pairs, evaluate
    from domain_transfer.train import KIND, build_generator

    exp = tmp_path / "ds"
    generate(exp, "smoke", seed=0, targets=["night"], size=64, workers=1, progress=False)
    pairs = drivesim_pairs(exp)
    assert len(pairs) == 16 and all("paired/night/train" in b for _, b in pairs)
    assert [Path(a).name for a, _ in pairs] == [Path(b).name for _, b in pairs]
    cfg = tiny(detector_cfg=str(DRIVESIM_CFG), detector_weights="random")
    G = build_generator(cfg)
    with torch.no_grad():
        G.attention[-1].bias[-1] = 50.0  # all weight on the input: the identity translation
    ck = tmp_path / "identity.ckpt"
    save_checkpoint(ck, kind=KIND, config=cfg.to_dict(), iteration=0, G=G.state_dict())
    r = evaluate(ck, exp, limit=6, ema=False, progress=False)
    assert r["images"] == 6 and r["target_images"] == 6
    assert abs(r["psnr_translated"] - r["psnr_source"]) < 0.05  # identity: translated == source
    assert abs(r["ssim_translated"] - r["ssim_source"]) < 1e-3
    assert 5 < r["psnr_source"] < 40 and r["ssim_source"] < 0.95  # day and night renders differ
    assert abs(r["kid_translated"] - r["kid_source"]) < 1e-3 * max(1.0, abs(r["kid_source"]))
    with pytest.raises(DataError, match="not a DriveSim experiment"):
        evaluate(ck, tmp_path, progress=False)

    # `domain-transfer grid`: source | translated | generated share | the paired night render
    out = tmp_path / "grid.png"
    assert cli.main(["grid", str(ck), str(exp / "source.data"), str(out), "--pairs", str(exp), "--images", "2",
                     "--size", "64", "--no-ema"]) == 0
    g = cv2.imread(str(out))
    assert g.shape == (22 + 2 * 68, 4 * 68, 3)
    cell = [g[24:88, 68 * c + 2:68 * c + 66].astype(int) for c in range(4)]
    assert np.array_equal(cell[0], cv2.imread(pairs[0][0]))        # row 1 = the first source image
    assert np.abs(cell[1] - cell[0]).max() <= 1                     # identity generator
    assert np.array_equal(cell[3], cv2.imread(pairs[0][1]))        # its night render
    assert np.abs(cell[3] - cell[0]).mean() > 10
    jpg = tmp_path / "grid.jpg"
    assert cli.main(["grid", str(ck), str(exp / "source.data"), str(jpg), "--images", "1", "--no-ema"]) == 0
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff" and cv2.imread(str(jpg)).shape[1] == 3 * 68
    assert cli.main(["grid", str(ck), str(exp / "source.data"), str(out), "--first", "999"]) == 2
