"""The evaluation input equals Darknet's to the bit (darknet_kd/data/dataset.py resize_image,
letterbox, EvalDataset; csrc/engine/image.cpp for `dkd`).

The reference below transcribes Darknet's loops (src/image.c: load_image_stb's bytes / 255.,
resize_image, letterbox_image, embed_image; AlexeyAB/darknet) one float32 operation at a time,
slowly, on small images.  The numpy version was also compared with Darknet's own image.o (built
-Ofast from the mirror, linked into a small dump program) on 360 size pairs: every float equal.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.data.dataset import (U8_TO_FLOAT, EvalDataset, collate, letterbox, letterbox_size, load_image,
                                     resize_image)

F = np.float32
ONE = F(1)


def dn_load(img_u8: np.ndarray) -> np.ndarray:
    """load_image_stb: planar CHW, ``im.data[dst] = (float)data[src]/255.``"""
    c, h, w = img_u8.shape[2], img_u8.shape[0], img_u8.shape[1]
    im = np.zeros((c, h, w), F)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                im[k, j, i] = F(float(img_u8[j, i, k]) / 255.)
    return im


def dn_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """image.c:resize_image, line by line (h == 1 with im.h != h is undefined in Darknet)."""
    c_, ih, iw = im.shape
    if iw == w and ih == h:
        return im.copy()
    resized = np.zeros((c_, h, w), F)
    part = np.zeros((c_, ih, w), F)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_scale = F(iw - 1) / F(w - 1)
        h_scale = F(ih - 1) / F(h - 1)
    for k in range(c_):
        for r in range(ih):
            for c in range(w):
                if c == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = F(c) * w_scale
                    ix = int(sx)
                    dx = sx - F(ix)
                    val = (ONE - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, c] = val
    for k in range(c_):
        for r in range(h):
            sy = F(r) * h_scale
            iy = int(sy)
            dy = sy - F(iy)
            for c in range(w):
                resized[k, r, c] = (ONE - dy) * part[k, iy, c]
            if r == h - 1 or ih == 1:
                continue
            for c in range(w):
                resized[k, r, c] += dy * part[k, iy + 1, c]
    return resized


def dn_letterbox(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """image.c:letterbox_image + embed_image."""
    c_, ih, iw = im.shape
    if F(w) / F(iw) < F(h) / F(ih):
        new_w, new_h = w, (ih * w) // iw
    else:
        new_h, new_w = h, (iw * h) // ih
    boxed = np.full((c_, h, w), F(.5), F)
    if new_w and new_h:  # Darknet's make_image(x, 0) + empty loops: nothing is embedded
        resized = dn_resize(im, new_w, new_h)
        dx, dy = (w - new_w) // 2, (h - new_h) // 2
        for k in range(c_):
            for y in range(new_h):
                for x in range(new_w):
                    boxed[k, dy + y, dx + x] = resized[k, y, x]
    return boxed


def bits(a):
    return np.ascontiguousarray(a, dtype=F).view(np.uint32)


SIZES = [  # (source w, h) -> (target w, h): up, down, odd, 1-pixel sources and targets, the dark last row
    ((37, 23), (64, 48)), ((64, 48), (37, 23)), ((13, 29), (29, 13)), ((40, 30), (40, 17)), ((40, 30), (11, 30)),
    ((1, 1), (5, 4)), ((1, 6), (4, 9)), ((6, 1), (9, 4)), ((2, 2), (3, 3)), ((9, 7), (1, 5)), ((3, 3), (2, 2)),
    ((5, 3), (42, 48)), ((8, 2), (8, 42)), ((31, 17), (31, 17)),
]


@pytest.mark.parametrize("src,dst", SIZES)
def test_resize_image_is_darknets(src, dst):
    img = np.random.default_rng(sum(src) * 31 + sum(dst)).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    want = dn_resize(dn_load(img), *dst)
    got = resize_image(img, *dst)
    assert got.dtype == np.float32 and got.shape == (3, dst[1], dst[0])
    np.testing.assert_array_equal(bits(got), bits(want))
    # float input (already load_image'd), one channel, any block of rows, into a view: the same floats
    np.testing.assert_array_equal(bits(resize_image(U8_TO_FLOAT[img], *dst)), bits(want))
    np.testing.assert_array_equal(bits(resize_image(img[:, :, 1:2], *dst)), bits(want[1:2]))
    for block in (1, 5 * dst[0] * 3 * 4):  # one row, five rows per block
        np.testing.assert_array_equal(bits(resize_image(img, *dst, block_bytes=block)), bits(want))
    canvas = np.zeros((3, dst[1] + 3, dst[0] + 2), F)
    resize_image(img, *dst, out=canvas[:, 2:2 + dst[1], 1:1 + dst[0]])
    np.testing.assert_array_equal(bits(canvas[:, 2:2 + dst[1], 1:1 + dst[0]]), bits(want))
    assert not canvas[:, :2].any() and not canvas[:, :, :1].any()


def test_dark_last_row_as_darknet():
    """3 -> 48 rows: (47 * (2/47 in float32)) < 2, so Darknet's last row is (1-dy)*row[1] with
    dy ~ 1 (about 1e-7) instead of row 2 -- kept, since Darknet's network sees it."""
    img = np.full((3, 5, 3), 200, np.uint8)
    out = resize_image(img, 5, 48)
    assert np.all(out[:, :-1] > 0.78) and np.all(out[:, -1] < 1e-6)
    np.testing.assert_array_equal(bits(out), bits(dn_resize(dn_load(img), 5, 48)))


def test_one_pixel_high_target_takes_the_last_row():
    """h == 1: Darknet divides by zero (undefined); we sample the last row, as Darknet samples
    the last column when w == 1."""
    img = np.random.default_rng(3).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    want = dn_resize(dn_load(img[-1:]), 4, 2)[:, :1]  # the last row, resized horizontally
    np.testing.assert_array_equal(bits(resize_image(img, 4, 1)), bits(want))
    np.testing.assert_array_equal(resize_image(img, 1, 1)[:, 0, 0], U8_TO_FLOAT[img[-1, -1]])


@pytest.mark.parametrize("src,net", [((37, 23), (32, 32)), ((23, 37), (32, 32)), ((64, 48), (48, 40)),
                                     ((12, 7), (41, 33)), ((7, 12), (41, 33)), ((200, 3), (20, 20)),
                                     ((20, 20), (20, 20)), ((1, 1), (9, 7))])
def test_letterbox_is_darknets(src, net):
    img = np.random.default_rng(src[0] * 7 + src[1]).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    got = letterbox(img, *net)
    assert got.dtype == np.float32 and got.shape == (3, net[1], net[0])
    np.testing.assert_array_equal(bits(got), bits(dn_letterbox(dn_load(img), *net)))
    if src == (200, 3):  # the fit is 20 x 0: an all-grey canvas, as Darknet
        assert np.all(got == F(0.5))


def test_letterbox_size_uses_darknets_float_test():
    """Darknet compares (float)w/ow < (float)h/oh; in double the other branch wins here."""
    ow, oh, w, h = 37837, 1182904, 19, 594
    assert w / ow < h / oh and not F(w) / F(ow) < F(h) / F(oh)
    assert letterbox_size(ow, oh, w, h) == ((ow * h) // oh, h, (w - (ow * h) // oh) // 2, 0) == (19, 594, 0, 0)
    assert letterbox_size(640, 480, 416, 416) == (416, 312, 0, 52)


def test_u8_to_float_is_load_image():
    v = np.arange(256)
    np.testing.assert_array_equal(bits(U8_TO_FLOAT), bits((v / 255.).astype(F)))
    np.testing.assert_array_equal(bits(U8_TO_FLOAT), bits(v.astype(F) / F(255)))  # IEEE float division agrees


@pytest.mark.parametrize("letter_box", [False, True])
def test_eval_dataset_gives_darknets_network_input(tmp_path, letter_box):
    """EvalDataset (used by map, detect, pseudo-label and the LPLD audit) -> collate: the
    tensor is Darknet's load_data IMAGE_DATA / LETTERBOX_DATA image, float32 to the bit."""
    rng = np.random.default_rng(5)
    paths, want = [], []
    for i, (h, w) in enumerate([(30, 45), (50, 20)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), img[..., ::-1])
        im = dn_load(img)
        want.append(dn_letterbox(im, 40, 24) if letter_box else dn_resize(im, 40, 24))
    ds = EvalDataset(paths, 2, 40, 24, letter_box, labels=[np.zeros((0, 5), F)] * 2)
    x, _, infos = collate([ds[0], ds[1]])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 24, 40)
    np.testing.assert_array_equal(bits(x.numpy()), bits(np.stack(want)))
    assert np.array_equal(load_image(paths[0]), cv2.imread(str(paths[0]))[..., ::-1])
    assert infos[1]["orig_size"] == (20, 50)


def test_collate_still_scales_uint8_training_samples():
    u8 = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    x, _, _ = collate([(u8, torch.zeros((0, 5)), {})])
    assert x.dtype == torch.float32 and torch.all(x == 1.0)


# ---------------------------------------------------------------- the C++ engine (dkd)

PROBE = """[net]
width={w}
height={h}
channels=3
{lb}
[convolutional]
filters=6
size=1
stride=1
activation=linear

[yolo]
mask=0
anchors=10,14
classes=1
num=1
"""


@pytest.mark.parametrize("letter_box", [False, True])
def test_engine_input_is_darknets(tmp_path, letter_box):
    """csrc/engine/image.cpp gives the same floats as EvalDataset: a 1x1 convolution copying the
    3 input channels (weights 1/0, no bias) makes the engine's [yolo] input its network input."""
    pytest.importorskip("darknet_kd._C")
    from darknet_kd.engine import Net
    from darknet_kd.model import Darknet

    cfg = tmp_path / "probe.cfg"
    cfg.write_text(PROBE.format(w=40, h=24, lb="letter_box=1" if letter_box else ""))
    model = Darknet.from_cfg(cfg)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for k in range(3):
            conv.weight[k, k] = 1.0
    model.save_weights(tmp_path / "probe.weights")
    net = Net(cfg, tmp_path / "probe.weights")
    rng = np.random.default_rng(9)
    for h, w in [(24, 40), (30, 45), (50, 20), (7, 5), (3, 200), (1, 1), (480, 640)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = letterbox(img, 40, 24) if letter_box else resize_image(img, 40, 24)
        net.detect(img)
        got = net.heads()[0][0, :3]
        np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{w}x{h}")
