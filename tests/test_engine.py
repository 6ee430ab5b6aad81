"""The compiled inference engine (csrc/engine/, darknet_kd.engine, the `dkd` CLI).

- fp32 outputs equal the PyTorch model and OpenCV DNN (1e-4) on every shipped cfg, seeded
  random weights, small inputs for the large cfgs; the raw heads equal the model's;
- bf16 stays close to fp32 (tolerance below, documented in README);
- `dkd detect` / Net.detect give the detections of `darknet-kd detect` (JPEG and PNG,
  stretch and letterbox, down- and up-scaling), `dkd info` prints `darknet-kd info`'s text;
- the C++ cfg and weights parsers report the same errors (file:line, byte offsets) as the
  Python ones, on hand-made bad files and on seeded mutations (a crash kills the test
  process; `make asan-test` runs the mutations under AddressSanitizer);
- the C API through cffi gives the pybind11 results and its errors.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.cfg import sized_cfg
from darknet_kd.engine import Net, cpu_has_bf16
from darknet_kd.errors import DarknetKDError, OpError
from darknet_kd.model import Darknet
from darknet_kd.model.parity import OPENCV_CLASS_THRESH, opencv_outputs, to_opencv_layout
from darknet_kd.model.weights import randomize

ROOT = Path(__file__).resolve().parents[1]
CFGS = sorted((ROOT / "cfg").glob("*.cfg"))
LARGE = {"yolov3.cfg", "yolov4.cfg"}
BF16_TOL = 1e-2  # abs, decoded outputs (boxes relative to the input, probabilities)


def dkd_binary() -> Path:
    if os.environ.get("DKD_BINARY"):  # another build (as DKD_C_MODULE / DKD_LIBDKD for the library)
        return Path(os.environ["DKD_BINARY"])
    for p in (ROOT / ".venv" / "bin" / "dkd", ROOT / "build" / "cmake" / "python" / "lib" / "dkd"):
        if p.exists():
            return p
    pytest.fail("the dkd binary is not built (make setup)")


def random_model(cfg: Path, size: int, d: Path, seed: int = 0):
    """(model, cfg at `size`, weights) with seeded random weights written to `d`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet.from_cfg(cfg, size, size).eval()
    randomize(model, seed)
    cfg2 = sized_cfg(cfg, size, d)
    w = d / f"{cfg.stem}-{seed}.weights"
    model.save_weights(w)
    return model, cfg2, w


def text_model(d: Path, name: str, text: str, seed: int):
    """(eval model, cfg, weights) for cfg ``text`` written to ``d/name.cfg``, seeded random weights."""
    cfg = d / f"{name}.cfg"
    cfg.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet.from_cfg(cfg).eval()
    randomize(model, seed)
    w = d / f"{name}.weights"
    model.save_weights(w)
    return model, cfg, w


def size_for(cfg: Path) -> int:
    return 128 if cfg.name in LARGE else 160


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("cfg", CFGS, ids=lambda p: p.stem)
def test_fp32_equals_pytorch_and_opencv(cfg, tmp_path):
    torch.manual_seed(0)
    size = size_for(cfg)
    model, cfg2, w = random_model(cfg, size, tmp_path)
    x = np.random.RandomState(1).rand(2, 3, size, size).astype(np.float32)
    net = Net(cfg2, w, threads=1)
    ours = net.forward(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        heads = model(torch.from_numpy(x), raw=True)
    assert ours.shape == ref.shape == (2, net.rows, 5 + net.classes)
    assert np.abs(ours - ref).max() < 1e-4
    for h, r in zip(net.heads(), heads):
        assert np.abs(h - r.numpy()).max() < 1e-4
    # OpenCV DNN: every value it reports (its class scores are objectness x class prob,
    # zeroed at or below its 0.2 threshold).
    for b in range(2):
        theirs = opencv_outputs(cfg2, w, x[b:b + 1])
        mine = to_opencv_layout(ours[b], model, x.shape)
        for m, t in zip(mine, theirs):
            reported = t[:, 5:] > 0
            assert np.abs(m[:, :5] - t[:, :5]).max() < 1e-4
            assert np.abs(np.where(reported, m[:, 5:] - t[:, 5:], 0)).max() < 1e-4
            assert np.where(reported, 0, m[:, 5:] - OPENCV_CLASS_THRESH).max(initial=0) < 1e-4


EDGE = """[net]
width=32
height=24
channels=4

[dropout]
probability=0.1

[route]
layers=0
groups=2
group_id=1

[convolutional]
filters=6
size=3
stride=1
pad=1
groups=2
activation=hard_mish

[maxpool]
size=3
stride=1

[upsample]
stride=1
scale=0.5

[shortcut]
from=-2
activation=lhtan

[route]
layers=-1,1,0

[avgpool]

[convolutional]
filters=18
size=1
activation=selu

[upsample]
stride=4

[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,14
classes=1
num=3
new_coords=1
scale_x_y=1.1
"""


def test_unusual_layers_equal_pytorch(tmp_path):
    """Views of the network input (dropout + grouped route), grouped convolutions,
    activations without a oneDNN post-op (hard_mish, lhtan), odd maxpool, upsample with
    scale, avgpool, new_coords / scale_x_y decode, 4 input channels."""
    model, cfg, w = text_model(tmp_path, "edge", EDGE, 5)
    net = Net(cfg, w)
    for b in (2, 1):
        x = np.random.RandomState(b).rand(b, 4, 24, 32).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(net.forward(x) - ref).max() < 1e-4


SLICES = """[net]
width=32
height=32
channels=16

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[maxpool]
size=2
stride=1

[route]
layers=0
groups=4
group_id=1

[route]
layers=0
groups=2
group_id=0

[shortcut]
from=2
activation=linear

[route]
layers=5,3

[route]
layers=0
groups=2
group_id=1

[avgpool]

[route]
layers=6

[route]
layers=0
groups=2
group_id=0

[upsample]
stride=2

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,14
classes=1
num=3
"""


def test_grouped_route_views_feed_every_layer_kind(tmp_path):
    """A route with one grouped input is a channel-slice view of its source, no copy step
    (route.cpp); maxpool, shortcut, a concat, avgpool, upsample and an aliasing route read
    such views (through Plan::dense / Plan::as), at batch 1 and 2.  Layer 0 is a Winograd
    convolution, so its output is channels-last and every slice a view."""
    model, cfg, w = text_model(tmp_path, "slices", SLICES, 7)
    net = Net(cfg, w)
    for b in (1, 2):
        x = np.random.RandomState(b).rand(b, 16, 32, 32).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(net.forward(x) - ref).max() < 1e-4
    rows = {int(r.split()[0]): r for r in net.profile().splitlines() if re.match(r"\s+\d+ route", r)}
    for i in (1, 3, 4, 7, 10):  # the grouped single-input routes ran no step
        assert rows[i].split()[-2:] == ["0.000", "0.0"], rows[i]
    assert float(rows[6].split()[-2]) > 0  # the concat did


def test_bf16_close_to_fp32(tmp_path):
    cfg = ROOT / "cfg" / "yolov4-tiny.cfg"
    model, cfg2, w = random_model(cfg, 224, tmp_path, seed=2)
    x = np.random.RandomState(3).rand(2, 3, 224, 224).astype(np.float32)
    fp32 = Net(cfg2, w).forward(x)
    net = Net(cfg2, w, bf16=True)
    if not cpu_has_bf16():
        assert net.precision == "fp32"  # the documented fallback
        pytest.skip("this CPU has no AVX512-BF16/AMX")
    assert net.precision == "bf16"
    out = net.forward(x)
    diff = np.abs(out - fp32)
    assert diff.max() < BF16_TOL
    assert 0 < diff.mean() < 1e-3  # really bf16 arithmetic, and close on average


def test_threads_batches_and_replanning(tmp_path):
    cfg = ROOT / "cfg" / "yolov3-tiny-drivesim.cfg"
    _, cfg2, w = random_model(cfg, 128, tmp_path, seed=4)
    x = np.random.RandomState(5).rand(3, 3, 128, 128).astype(np.float32)
    net = Net(cfg2, w, threads=1)
    one = net.forward(x)
    net.threads = 2
    assert net.threads == 2
    np.testing.assert_allclose(net.forward(x), one, atol=1e-5)
    for b in range(3):  # batch 1 plans again; same rows as inside the batch
        np.testing.assert_allclose(net.forward(x[b:b + 1])[0], one[b], atol=1e-5)


def test_width_height_override_and_describe(tmp_path):
    net = Net(ROOT / "cfg" / "yolov4-tiny.cfg", width=320, height=192)
    assert (net.width, net.height, net.channels, net.classes) == (320, 192, 3, 80)
    assert net.rows == 3 * (10 * 6 + 20 * 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet.from_cfg(ROOT / "cfg" / "yolov4-tiny.cfg", 320, 192)
    assert net.parameters == sum(p.numel() for p in model.parameters())
    assert net.layer_table() == model.layer_table()
    assert abs(net.bflops - model.bflops) < 1e-9
    out = net.forward(np.zeros((1, 3, 192, 320), np.float32))  # no weights: zeros
    assert np.isfinite(out).all()
    with pytest.raises(OpError, match="expected"):
        net.forward(np.zeros((1, 3, 416, 416), np.float32))


def test_info_matches_darknet_kd_info():
    cfg = ROOT / "cfg" / "yolov4-tiny-3l.cfg"
    ours = subprocess.run([dkd_binary(), "info", cfg, "--width", "320", "--height", "320"], capture_output=True,
                          text=True, check=True).stdout
    theirs = subprocess.run([ROOT / ".venv" / "bin" / "darknet-kd", "info", cfg, "--width", "320", "--height", "320"],
                            capture_output=True, text=True, check=True).stdout
    assert ours == theirs


# ---------------------------------------------------------------- detect

# A small net whose outputs follow the pixels closely (a one-pixel difference in decoding or
# resizing shows in the detections): 96x64 input, 7 classes as cfg/drivesim.names.
SENSITIVE = """[net]
width=96
height=64
channels=3

[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=36
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=7
num=3
"""


def _images(d: Path) -> list[Path]:
    """Smooth random scenes of several sizes (down- and up-scaled), JPEG and PNG."""
    rng = np.random.RandomState(7)
    out = []
    for i, (h, w, ext) in enumerate([(200, 300, ".jpg"), (40, 50, ".png"), (333, 517, ".jpg"), (64, 96, ".png")]):
        img = cv2.resize(rng.randint(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8), (w, h),
                         interpolation=cv2.INTER_CUBIC)
        p = d / f"img{i}{ext}"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 85] if ext == ".jpg" else [])
        out.append(p)
    return out


def _match(a, b, tol=1e-4):
    """Detections (class, prob, cx, cy, w, h) of two runs pair up one to one within tol."""
    assert len(a) == len(b), (len(a), len(b))
    a, b = np.asarray(a, np.float64).reshape(-1, 6), np.asarray(b, np.float64).reshape(-1, 6)
    used = np.zeros(len(b), bool)
    for row in a:
        d = np.abs(b - row).max(1)
        d[used | (b[:, 0] != row[0])] = np.inf
        j = int(np.argmin(d))
        assert d[j] < tol, (row, b[j])
        used[j] = True


def _sensitive(tmp_path, letterbox: bool):
    return text_model(tmp_path, "sensitive",
                      SENSITIVE.replace("[net]", "[net]\nletter_box=1") if letterbox else SENSITIVE, 8)


@pytest.mark.parametrize("letterbox", [False, True])
def test_detect_preprocessing_is_exact(tmp_path, letterbox):
    """The engine's resize/letterbox gives the input darknet-kd's EvalDataset gives (Darknet's
    resize_image / letterbox_image): the raw heads after detect() are equal (the inputs are
    equal to the bit: tests/test_image_exact.py::test_engine_input_is_darknets)."""
    from darknet_kd.data.dataset import EvalDataset, collate

    model, cfg, w = _sensitive(tmp_path, letterbox)
    net = Net(cfg, w)
    rng = np.random.RandomState(12)
    for h, wd in [(64, 96), (200, 300), (37, 53), (480, 640), (50, 400), (7, 5), (1, 1)]:
        img = rng.randint(0, 256, (h, wd, 3)).astype(np.uint8)
        p = tmp_path / "x.png"
        cv2.imwrite(str(p), img[..., ::-1])
        x, _, _ = collate([EvalDataset([p], 7, 96, 64, letterbox, labels=[np.zeros((0, 5))])[0]])
        net.detect(img)
        with torch.no_grad():
            ref = model(x, raw=True)[0].numpy()
        assert np.abs(net.heads()[0] - ref).max() < 1e-5, (h, wd)


@pytest.mark.parametrize("letterbox", [False, True])
def test_detect_equals_darknet_kd_detect(tmp_path, letterbox):
    from darknet_kd.detect import detect

    model, cfg, w = _sensitive(tmp_path, letterbox)
    paths = _images(tmp_path)
    thresh = 0.25
    ref = {str(p): [(d.class_id, d.confidence, *d.box) for d in dets] for p, _, dets in detect(model, paths, thresh)}
    assert sum(map(len, ref.values())) > 40  # plenty of boxes, NMS at work
    # the pybind11 engine (images decoded by OpenCV here)
    net = Net(cfg, w)
    for p in paths:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        _match([(d.class_id, d.prob, *d.box) for d in net.detect(rgb, thresh)], ref[str(p)])
    # the dkd CLI (its own JPEG/PNG decoding): Darknet's JSON, drawn images
    out = tmp_path / "out.json"
    res = subprocess.run([dkd_binary(), "detect", cfg, w, tmp_path, "--names", ROOT / "cfg" / "drivesim.names",
                          "--json", out, "--draw", tmp_path / "drawn"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    frames = json.loads(out.read_text())
    assert [f["filename"] for f in frames] == [str(p) for p in sorted(paths)]
    for f in frames:
        got = [(o["class_id"], o["confidence"], *o["relative_coordinates"].values()) for o in f["objects"]]
        _match(got, ref[f["filename"]], tol=1e-4)
        assert f"{f['filename']}: {len(got)} objects" in res.stdout
    assert sorted(x.name for x in (tmp_path / "drawn").iterdir()) == sorted(p.stem + ".jpg" for p in paths)


def test_detect_cli_errors(tmp_path):
    cfg = ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"
    _, cfg2, w = random_model(cfg, 128, tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    for args, msg in [([cfg2, w, tmp_path / "missing.png"], "no such image"),
                      ([cfg2, w, bad], "cannot decode"),
                      ([cfg2, tmp_path / "none.weights", bad], "cannot read weights"),
                      ([cfg2, w, bad, "--names", cfg2], "names, the network has classes=")]:
        r = subprocess.run([dkd_binary(), "detect", *args], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    r = subprocess.run([dkd_binary(), "detect", cfg2, w], capture_output=True, text=True)
    assert r.returncode == 1 and "usage" in r.stderr


# ---------------------------------------------------------------- errors: the same as Python

GOOD = """[net]
width=64
height=64
channels=3

[convolutional]
filters=16
size=3
stride=2
pad=1
batch_normalize=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""

BAD_CFGS = [
    ("[net\nwidth=1\n", None), ("[foo]\n", None), ("[net]\n[lstm]\n", None), ("x=1\n[net]\n", None),
    ("[net]\n[convolutional]\nfilters\n", None), ("[net]\n", None), ("", None), ("[convolutional]\n", None),
    ("[net]\n[net]\n", None), (GOOD.replace("filters=16", "filters=1x"), None),
    (GOOD.replace("width=64", "width=0"), None), (GOOD.replace("size=3", "size=0"), None),
    (GOOD.replace("filters=16", "filters=15\ngroups=2"), None), (GOOD.replace("activation=leaky", "activation=lol"), None),
    (GOOD.replace("[maxpool]", "[route]\nlayers=-5\n[maxpool]"), None),
    (GOOD.replace("[convolutional]\nfilters=18", "[shortcut]\nfrom=0\n[convolutional]\nfilters=18"), None),
    (GOOD.replace("[maxpool]", "[route]\nlayers=0\ngroups=2\ngroup_id=2\n[maxpool]"), None),
    (GOOD.replace("filters=18", "filters=17"), None), (GOOD.replace("num=3", "num=4"), None),
    (GOOD.replace("mask=0,1,2", "mask=0,1,5"), None), (GOOD.replace("[yolo]", "[dropout]\nprobability=1.5\n[yolo]"), None),
    (GOOD.replace("classes=1", "classes=1\nnms_kind=fast"), None), (GOOD.replace("classes=1", "classes=1\nscale_x_y=a"), None),
    (GOOD.split("[yolo]")[0], None), (GOOD + "\n[route]\nlayers=-2\n[convolutional]\nfilters=21\n[yolo]\nclasses=2\nmask=0,1,2\nnum=3\n", None),
    (GOOD.replace("[net]", "[net]\npolicy=steps\nsteps=1,2\nscales=.1"), None),
    (GOOD.replace("stride=2\npad=1", "stride=2\npad=1\nxnor=1"), None),
    (GOOD.replace("[maxpool]", "[upsample]\nstride=-2\n[maxpool]"), None),
    (GOOD.replace("width=64", "width=64 # the width"), "ok"), (GOOD.replace("[maxpool]", "[MAXPOOL]"), "ok"),
    (GOOD.replace("filters=16", "filters=1_6"), "ok"), (GOOD.replace("\n", "\r\n"), "ok"),
]


def _py_outcome(build):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
        return "ok"
    except DarknetKDError as e:
        return f"{type(e).__name__}: {e}"


def _engine_outcome(build):
    try:
        build()
        return "ok"
    except DarknetKDError as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("i", range(len(BAD_CFGS)))
def test_cfg_errors_equal_python(tmp_path, i):
    text, want = BAD_CFGS[i]
    p = tmp_path / "t.cfg"
    p.write_bytes(text.encode())
    py = _py_outcome(lambda: Darknet.from_cfg(p))
    ours = _engine_outcome(lambda: Net(p))
    assert ours == py
    assert (py == "ok") == (want == "ok"), py


def test_cfg_file_errors_equal_python(tmp_path):
    p = tmp_path / "t.cfg"
    p.write_bytes(GOOD.encode()[:40] + b"\xff\xfe" + GOOD.encode()[40:])
    for path in (p, tmp_path / "missing.cfg", tmp_path):
        py = _py_outcome(lambda: Darknet.from_cfg(path))
        assert py.startswith("CfgError") and _engine_outcome(lambda: Net(path)) == py


def test_unused_and_duplicate_fields_are_warned(tmp_path):
    p = tmp_path / "t.cfg"
    p.write_text(GOOD.replace("width=64", "width=64\nwidth=32\nfoo=1"))
    assert Net(p).warnings == [f"{p}:3: duplicate field 'width' in [net]; Darknet uses the first (line 2)",
                               f"{p}:4: unused field 'foo = 1' in [net]"]


def test_weights_errors_equal_python(tmp_path):
    p = tmp_path / "t.cfg"
    p.write_text(GOOD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet.from_cfg(p)
    randomize(model, 0)
    w = tmp_path / "t.weights"
    model.save_weights(w)
    data = w.read_bytes()
    conv0 = 20 + 4 * (4 * 16 + 16 * 27)
    cases = {"short": data[:7], "header": data[:15], "trunc": data[:-4], "long": data + b"\0" * 8,
             "version": b"\xff\xff\xff\xff" + data[4:], "partial": data[:conv0],
             "v01": data[:4] + (1).to_bytes(4, "little") + data[8:16] + data[20:]}
    for name, blob in cases.items():
        f = tmp_path / f"{name}.weights"
        f.write_bytes(blob)
        py = _py_outcome(lambda: Darknet.from_cfg(p).load_weights(f))
        assert _engine_outcome(lambda: Net(p, f)) == py, name
        assert (py == "ok") == (name in ("partial", "v01")), (name, py)
    assert _engine_outcome(lambda: Net(p, tmp_path / "nope.weights")).startswith("WeightsError: ")


def _mutate(data: bytes, rng: random.Random, alphabet: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[i:i + rng.randint(1, 8)]
        elif op == 1:
            b[i:i] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        elif op == 2 and b:
            b[min(i, len(b) - 1)] = rng.choice(alphabet)
        elif op == 3:
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[j:j + rng.randint(1, 40)]  # duplicate a chunk (sections, options)
        elif b:
            del b[i:]  # truncation
    return bytes(b)


def test_fuzz_cfg_and_weights_same_outcome_no_crash(tmp_path):
    """Seeded mutations of a cfg and of its weights: the engine never crashes, reports an
    error exactly when the Python side does, with the same message (file:line / byte)."""
    rng = random.Random(1234)
    base = (ROOT / "cfg" / "yolov3-tiny-drivesim.cfg").read_text()
    base = re.sub(r"(?m)^(width|height)=.*$", r"\1=64", base).encode()
    alphabet = b"0123456789-=,.#;[]_ \nabcxyz\t\xff\xc3"
    p = tmp_path / "f.cfg"
    errors = 0
    n = int(os.environ.get("DKD_FUZZ_CASES", "300"))
    for k in range(n):
        p.write_bytes(_mutate(base, rng, alphabet))
        py = _py_outcome(lambda: Darknet.from_cfg(p))
        ours = _engine_outcome(lambda: Net(p))
        assert ours == py, (k, p.read_bytes())
        errors += py != "ok"
    assert 0.2 * n < errors < n  # the mutations hit both paths
    # weights: mutate the bytes of a valid file (header, lengths)
    p.write_bytes(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet.from_cfg(p)
    w = tmp_path / "f.weights"
    model.save_weights(w)
    good = w.read_bytes()
    for k in range(n // 3):
        w.write_bytes(_mutate(good[:64], rng, bytes(range(256))) + good[64:] if k % 2 else _mutate(good, rng, b"\0\1\xff"))
        py = _py_outcome(lambda: Darknet.from_cfg(p).load_weights(w))
        assert _engine_outcome(lambda: Net(p, w)) == py, k


# ---------------------------------------------------------------- the C API through cffi

def test_c_api_through_cffi(tmp_path):
    from darknet_kd import capi

    lib, ffi = capi.lib(), capi.ffi()
    cfg = ROOT / "cfg" / "yolov4-tiny-drivesim.cfg"
    _, cfg2, w = random_model(cfg, 96, tmp_path, seed=9)
    pnet = ffi.new("dkd_net**")
    assert lib.dkd_net_load(str(cfg2).encode(), str(w).encode(), 0, 0, lib.DKD_PRECISION_FP32, lib.DKD_DEVICE_CPU,
                            pnet) == lib.DKD_OK
    net = pnet[0]
    try:
        desc = ffi.new("dkd_net_desc*")
        assert lib.dkd_net_describe(net, desc) == lib.DKD_OK
        assert (desc.width, desc.height, desc.classes) == (96, 96, 7)
        x = np.random.RandomState(10).rand(2, 3, 96, 96).astype(np.float32)
        out = np.empty((2, desc.rows, 5 + desc.classes), np.float32)
        assert lib.dkd_net_forward(net, ffi.cast("float*", x.ctypes.data), 2,
                                   ffi.cast("float*", out.ctypes.data)) == lib.DKD_OK
        np.testing.assert_array_equal(out, Net(cfg2, w).forward(x))
        img = (np.random.RandomState(11).rand(50, 70, 3) * 255).astype(np.uint8)
        dets, count = ffi.new("dkd_detection[4]"), ffi.new("int64_t*")
        assert lib.dkd_net_detect(net, ffi.cast("uint8_t*", img.ctypes.data), 70, 50, 210, 0.2, 0.45, -1, dets, 4,
                                  count) == lib.DKD_OK
        ref = Net(cfg2, w).detect(img, 0.2)
        assert count[0] == len(ref)
        for i in range(min(4, count[0])):
            assert (dets[i].class_id, dets[i].prob) == (ref[i].class_id, pytest.approx(ref[i].prob, abs=1e-6))
        # bad arguments: an error code and a message, never a crash
        assert lib.dkd_net_forward(net, ffi.NULL, 1, ffi.NULL) == lib.DKD_ERR_NULL
        assert lib.dkd_net_forward(net, ffi.cast("float*", x.ctypes.data), 0, ffi.NULL) == lib.DKD_ERR_SIZE
        assert lib.dkd_net_detect(net, ffi.cast("uint8_t*", img.ctypes.data), 70, 50, 100, 0.2, 0.45, -1, dets, 4,
                                  count) == lib.DKD_ERR_SIZE
        assert b"row stride" in ffi.string(lib.dkd_last_error())
        assert lib.dkd_net_describe(ffi.NULL, desc) == lib.DKD_ERR_NULL
    finally:
        assert lib.dkd_net_free(net) == lib.DKD_OK
    assert lib.dkd_net_free(ffi.NULL) == lib.DKD_OK
    (tmp_path / "bad.cfg").write_text("[net]\nwidth=64\n[conv]\nfilters=abc\n")
    assert lib.dkd_net_load(str(tmp_path / "bad.cfg").encode(), ffi.NULL, 0, 0, 0, 0, pnet) == lib.DKD_ERR_CFG
    assert pnet[0] == ffi.NULL
    assert ffi.string(lib.dkd_last_error()).decode() == \
        f"{tmp_path / 'bad.cfg'}:4: layer 0 [convolutional]: filters='abc' is not an integer"
