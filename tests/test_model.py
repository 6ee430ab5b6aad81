"""Foundation: the Darknet model is exactly Darknet's.

Parity against OpenCV's Darknet importer (software nobody here wrote), byte-exact .weights,
partial/truncated/oversized files, and the cfg parser's errors with file:line."""
from __future__ import annotations

import random
import struct
import warnings

import numpy as np
import pytest
import torch

from darknet_kd import CfgError, Darknet, WeightsError
from darknet_kd.cfg import CfgWarning, parse_cfg_text
from darknet_kd.model.parity import random_parity
from darknet_kd.model.weights import randomize

from conftest import CFG_DIR

TINY = ["yolov3-tiny", "yolov4-tiny", "yolov4-tiny-3l", "yolov3-tiny-drivesim", "yolov4-tiny-drivesim",
        "yolov4-tiny-3l-drivesim"]
PARITY = [(n, s) for n in ["yolov3-tiny", "yolov4-tiny"] for s in (416, 320, 608)]
PARITY += [(n, 416) for n in ["yolov4-tiny-3l", "yolov3", "yolov4"]]
PARITY += [(n, None) for n in ["yolov3-tiny-drivesim", "yolov4-tiny-drivesim", "yolov4-tiny-3l-drivesim"]]


@pytest.mark.parametrize("name,size", PARITY)
def test_parity_with_opencv_dnn(name, size):
    torch.set_num_threads(2)
    diff = random_parity(CFG_DIR / f"{name}.cfg", size, seed=7)
    assert diff < 1e-4, f"{name}@{size}: max abs diff vs OpenCV DNN {diff}"


def test_parity_batch_of_two_and_detects_a_wrong_model(tmp_path):
    """The comparison itself must fail when the model differs (guards the test above)."""
    cfg = CFG_DIR / "yolov4-tiny.cfg"
    assert random_parity(cfg, 320, seed=3, batch=2) < 1e-4
    from darknet_kd.model import parity

    model = Darknet.from_cfg(cfg, 320, 320).eval()
    randomize(model, 3)
    w = tmp_path / "a.weights"
    model.save_weights(w)
    text = cfg.read_text().replace("width=416", "width=320").replace("height=416", "height=320")
    (tmp_path / "a.cfg").write_text(text)
    with torch.no_grad():
        model.layers[-2].conv.bias[4] += 0.5  # objectness of anchor 0: ours now differs from the file
    x = np.random.RandomState(0).rand(1, 3, 320, 320).astype(np.float32)
    assert parity.compare_with_opencv(model, tmp_path / "a.cfg", w, x) > 1e-3


# -- .weights ------------------------------------------------------------------------------------
def _random_weights_file(model, path, major=0, minor=2, revision=5, seen=123456789012):
    """Write a .weights file independently of our writer (numpy + struct)."""
    rng = np.random.RandomState(0)
    n = sum(t.numel() for m in model.layers if hasattr(m, "weight_tensors") for t in m.weight_tensors())
    head = struct.pack("<3i", major, minor, revision)
    head += struct.pack("<Q", seen) if major * 10 + minor >= 2 else struct.pack("<I", seen & 0xFFFFFFFF)
    body = rng.randn(n).astype("<f4")
    body[np.arange(n) % 7 == 0] = np.abs(body[np.arange(n) % 7 == 0])  # any float round-trips
    path.write_bytes(head + body.tobytes())
    return path.read_bytes()


@pytest.mark.parametrize("version", [(0, 2, 5), (0, 1, 0), (1, 0, 0)])
def test_weights_round_trip_is_byte_exact(tmp_path, version):
    model = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg")
    src = _random_weights_file(model, tmp_path / "in.weights", *version, seen=987654)
    assert model.load_weights(tmp_path / "in.weights") == len(model.layers)
    assert model.seen == 987654 and model.header == version
    model.save_weights(tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == src


def test_weights_values_land_in_the_right_tensors(tmp_path):
    model = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg")
    data = _random_weights_file(model, tmp_path / "in.weights")
    model.load_weights(tmp_path / "in.weights")
    conv0 = model.layers[0]  # batch_normalize=1, 32 filters, 3x3x3
    floats = np.frombuffer(data, "<f4", offset=20)
    np.testing.assert_array_equal(conv0.bn.bias.detach().numpy(), floats[0:32])
    np.testing.assert_array_equal(conv0.bn.weight.detach().numpy(), floats[32:64])
    np.testing.assert_array_equal(conv0.bn.running_mean.numpy(), floats[64:96])
    np.testing.assert_array_equal(conv0.bn.running_var.numpy(), floats[96:128])
    np.testing.assert_array_equal(conv0.conv.weight.detach().numpy().ravel(), floats[128:128 + 32 * 27])
    last = [m for m in model.layers if hasattr(m, "weight_tensors")][-1]  # no BN: biases then weights
    nw = last.conv.weight.numel()
    np.testing.assert_array_equal(last.conv.weight.detach().numpy().ravel(), floats[-nw:])
    np.testing.assert_array_equal(last.conv.bias.detach().numpy(), floats[-nw - 255:-nw])


def test_partial_weights(tmp_path):
    full = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg")
    randomize(full, 1)
    full.save_weights(tmp_path / "yolov4-tiny.conv.29", cutoff=29)
    fresh = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg")
    before = fresh.layers[32].conv.weight.detach().clone()
    assert fresh.load_weights(tmp_path / "yolov4-tiny.conv.29") == 29
    for i in range(29):
        a, b = full.layers[i], fresh.layers[i]
        if hasattr(a, "weight_tensors"):
            for x, y in zip(a.weight_tensors(), b.weight_tensors()):
                assert torch.equal(x, y)
    assert torch.equal(fresh.layers[32].conv.weight, before)  # beyond the cutoff: untouched
    # An explicit cutoff demands exactly those layers.
    assert fresh.load_weights(tmp_path / "yolov4-tiny.conv.29", cutoff=29) == 29
    with pytest.raises(WeightsError, match="too long"):
        fresh.load_weights(tmp_path / "yolov4-tiny.conv.29", cutoff=10)


def test_truncated_and_oversized_weights(tmp_path):
    model = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg")
    data = _random_weights_file(model, tmp_path / "in.weights")
    # Cut inside layer 0's weights: 20 header + 4*(4*32) BN + 100 bytes.
    cut = 20 + 4 * 128 + 100
    (tmp_path / "short.weights").write_bytes(data[:cut])
    with pytest.raises(WeightsError) as e:
        model.load_weights(tmp_path / "short.weights")
    msg = str(e.value)
    assert "short.weights" in msg and "layer 0" in msg and "too short" in msg
    assert f"file {cut} bytes" in msg and f"expected {len(data)}" in msg and "offset 20" in msg
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 12)
    with pytest.raises(WeightsError, match=r"too long: 12 bytes left") as e:
        model.load_weights(tmp_path / "long.weights")
    assert f"byte {len(data)}" in str(e.value)
    (tmp_path / "tiny.weights").write_bytes(data[:7])
    with pytest.raises(WeightsError, match="header"):
        model.load_weights(tmp_path / "tiny.weights")
    with pytest.raises(WeightsError, match="cannot read"):
        model.load_weights(tmp_path / "missing.weights")


def test_weights_fuzz(tmp_path):
    """Seeded mutations of a real .weights file: only our error type, never anything else."""
    model = Darknet.from_cfg(CFG_DIR / "yolov3-tiny.cfg")
    data = _random_weights_file(model, tmp_path / "in.weights")
    rng = random.Random(1234)
    p = tmp_path / "fuzz.weights"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(200):
        b = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            b = b[:rng.randrange(len(b))]
        elif kind == 1:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 2:
            i = rng.randrange(20)
            b[i] = rng.randrange(256)
        else:
            i = rng.randrange(20, len(b))
            b[i:i + 4] = bytes(rng.randrange(256) for _ in range(4))  # any float bits, NaN included
        p.write_bytes(bytes(b))
        try:
            model.load_weights(p)
            outcomes["ok"] += 1
        except WeightsError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


# -- cfg parser ------------------------------------------------------------------------------------
NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"
HEAD = ("[convolutional]\nsize=1\nstride=1\npad=1\nfilters=18\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n")


def _build(text, tmp_path, name="bad.cfg"):
    p = tmp_path / name
    p.write_text(text)
    return Darknet.from_cfg(p)


def _line_of(text, needle):
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


@pytest.mark.parametrize("text,needle,pattern", [
    (NET + "[convolutionl]\nfilters=3\n" + HEAD, "[convolutionl]", "unknown section"),
    (NET + "[convolutional]\nfilters 3\n" + HEAD, "filters 3", "malformed line"),
    (NET + "[convolutional]\nfilters=3x\n" + HEAD, "filters=3x", "not an integer"),
    (NET + "[convolutional]\nfilters=3\nactivation=leeky\n" + HEAD, "leeky", "unknown activation"),
    (NET + "[convolutional]\nfilters=3\n[route]\nlayers=-4\n" + HEAD, "layers=-4", "outside layers"),
    (NET + "[convolutional]\nfilters=3\n[shortcut]\nfrom=3\n" + HEAD, "from=3", "outside layers"),
    (NET + HEAD.replace("mask=0,1,2", "mask=0,1,5"), "mask=0,1,5", "mask index 5 is outside the 3 anchors"),
    (NET + HEAD.replace("anchors=10,14,23,27,37,58", "anchors=10,14,23,27,37"), "anchors=", "anchors= has 5"),
    (NET + HEAD.replace("filters=18", "filters=21"), "[yolo]", r"filters=21.*\(1\+5\)\*3 = 18"),
    (NET + "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=0\ngroups=2\ngroup_id=2\n" + HEAD, "group_id=2",
     "group_id"),
    (NET + "[region]\nclasses=1\n", "[region]", "not support"),
    ("filters=3\n" + NET + HEAD, "filters=3", "before the first section"),
    (NET + "[convolutional\nfilters=3\n" + HEAD, "[convolutional", "malformed section"),
])
def test_cfg_errors_name_file_and_line(tmp_path, text, needle, pattern):
    with pytest.raises(CfgError, match=pattern) as e:
        _build(text, tmp_path)
    assert f"bad.cfg:{_line_of(text, needle)}:" in str(e.value)


def test_cfg_syntax_comments_whitespace_and_lists(tmp_path):
    text = ("# a comment\n; another\n\n[net]\n width = 64 \nheight=64\n[convolutional]\nbatch_normalize=1\n"
            "filters=16\nsize=3\nstride=2\npad=1\nactivation=leaky # trailing comment\n[maxpool]\nsize=2\n"
            "stride=1\n[convolutional]\nsize=1\nstride=1\npad=1\nfilters=18\nactivation=linear\n"
            "[yolo]\nmask = 0, 1 ,2\nanchors = 10,14,  23,27, 37,58\nclasses=1\nnum=3\n")
    m = _build(text, tmp_path, "ok.cfg")
    assert m.layers[0].act_name == "leaky" and m.layers[0].out_shape.h == 32
    assert m.layers[1].out_shape.h == 32  # stride-1 maxpool keeps the size (yolov3-tiny's trick)
    assert m.yolo_layers[0].mask == [0, 1, 2] and m.yolo_layers[0].anchors[2] == (37.0, 58.0)


def test_unused_fields_warn_once_each(tmp_path):
    text = NET + "bogus=1\n[convolutional]\nfilters=3\nsize=3\nmystery=2\n" + HEAD
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _build(text, tmp_path, "w.cfg")
    msgs = [str(x.message) for x in w if issubclass(x.category, CfgWarning)]
    assert len(msgs) == 2
    assert any(f"w.cfg:{_line_of(text, 'bogus')}" in m and "bogus = 1" in m for m in msgs)
    assert any(f"w.cfg:{_line_of(text, 'mystery')}" in m for m in msgs)


def test_default_activation_is_logistic_and_bn_is_darknets(tmp_path):
    m = _build(NET + "[convolutional]\nfilters=4\nsize=1\nbatch_normalize=1\n" + HEAD.replace("filters=18", "filters=18"),
               tmp_path, "d.cfg")
    conv = m.layers[0]
    assert conv.act_name == "logistic"
    torch.manual_seed(0)
    randomize(m, 0)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        bn = conv.bn
        ref = torch.sigmoid(bn.weight.view(1, -1, 1, 1) * (conv.conv(x) - bn.running_mean.view(1, -1, 1, 1))
                            / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5) + bn.bias.view(1, -1, 1, 1))
        assert torch.allclose(conv.eval()(x), ref, atol=1e-6)
        # Training mode normalises with the unbiased batch variance, as Darknet's CPU build.
        conv.train()
        y = conv.conv(x)
        mean, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=True, keepdim=True)
        ref = torch.sigmoid(bn.weight.view(1, -1, 1, 1) * (y - mean) / torch.sqrt(var + 1e-5) + bn.bias.view(1, -1, 1, 1))
        assert torch.allclose(conv(x), ref, atol=1e-6)


def test_intermediate_outputs_and_training_heads():
    m = Darknet.from_cfg(CFG_DIR / "yolov4-tiny.cfg", 128, 128)
    x = torch.rand(1, 3, 128, 128)
    m.train()
    heads = m(x)
    assert [tuple(h.shape) for h in heads] == [(1, 255, 4, 4), (1, 255, 8, 8)]
    m.eval()
    with torch.no_grad():
        out, feats = m(x, keep=[9, 30])
    assert out.shape == (1, 3 * 16 + 3 * 64, 85)
    assert feats[9].shape == (1, 128, 16, 16) and feats[30].shape == (1, 255, 4, 4)


def test_cfg_fuzz_raises_only_our_errors(tmp_path):
    """A few hundred seeded mutations of a real cfg: building raises nothing but CfgError."""
    base = (CFG_DIR / "yolov3-tiny.cfg").read_text().splitlines()
    rng = random.Random(99)
    tokens = ["0", "-1", "-100", "3", "7", "1000000000", "1e9", "abc", "", "=", "1,2,,3", "nan", "-0.5",
              "[yolo]", "[route]", "layers=-1", "[", "]", "mish", "#", "groups=3"]
    built = errors = 0
    for _ in range(300):
        lines = list(base)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(lines))
            op = rng.randrange(5)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(i, lines[rng.randrange(len(lines))])
            elif op == 2 and "=" in lines[i]:
                k = lines[i].split("=")[0]
                lines[i] = f"{k}={rng.choice(tokens)}"
            elif op == 3:
                lines.insert(i, rng.choice(tokens))
            else:
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CfgWarning)
            try:
                Darknet(parse_cfg_text("\n".join(lines), "fuzz.cfg"))
                built += 1
            except CfgError as e:
                assert str(e).startswith("fuzz.cfg:")
                errors += 1
    assert built > 10 and errors > 10
