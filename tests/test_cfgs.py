"""The cfg files shipped in cfg/: they build cleanly, match Darknet's numbers, and the
DriveSim variants differ from the standard networks only where they are meant to.

Reference numbers: Darknet prints ``Total BFLOPS`` (parser.c:parse_network_cfg_custom) for
its own cfgs as 5.571 (yolov3-tiny, 416), 65.879 (yolov3, 416), 6.910 (yolov4-tiny, 416),
17.741 (yolov4-tiny-3l, 608) and 128.459 (yolov4, 608); AlexeyAB/darknet's README rounds
them to 5.6, 65.9, 6.9 and 128.5, and gives yolov4 at 416 as 60.1.
"""
import contextlib
import io
import math
import warnings

import pytest
import torch

from darknet_kd import cli
from darknet_kd.cfg import parse_cfg
from darknet_kd.model import Darknet

from conftest import CFG_DIR

STANDARD = ["yolov3-tiny", "yolov3", "yolov4-tiny", "yolov4-tiny-3l", "yolov4"]
DRIVESIM = ["yolov3-tiny", "yolov4-tiny", "yolov4-tiny-3l"]
DRIVESIM_NAMES = ["car", "truck", "bus", "person", "bicycle", "traffic_light", "traffic_sign"]
ALL = STANDARD + [f"{n}-drivesim" for n in DRIVESIM]

# name -> (own [net] size, Darknet's Total BFLOPS there)
BFLOPS = {
    "yolov3-tiny": (416, "5.571"),
    "yolov3": (416, "65.879"),
    "yolov4-tiny": (416, "6.910"),
    "yolov4-tiny-3l": (608, "17.741"),
    "yolov4": (608, "128.459"),
}

V3_TINY_ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
V3_ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
V4_ANCHORS = [12, 16, 19, 36, 40, 28, 36, 75, 76, 55, 72, 146, 142, 110, 192, 243, 459, 401]

# name -> (layer count, [(yolo layer index, mask, grid side at 416)])
STRUCTURE = {
    "yolov3-tiny": (24, [(16, [3, 4, 5], 13), (23, [0, 1, 2], 26)]),
    "yolov3": (107, [(82, [6, 7, 8], 13), (94, [3, 4, 5], 26), (106, [0, 1, 2], 52)]),
    "yolov4-tiny": (38, [(30, [3, 4, 5], 13), (37, [1, 2, 3], 26)]),
    "yolov4-tiny-3l": (45, [(30, [6, 7, 8], 13), (37, [3, 4, 5], 26), (44, [0, 1, 2], 52)]),
    "yolov4": (162, [(139, [0, 1, 2], 52), (150, [3, 4, 5], 26), (161, [6, 7, 8], 13)]),
}
ANCHORS = {"yolov3-tiny": V3_TINY_ANCHORS, "yolov3": V3_ANCHORS, "yolov4-tiny": V3_TINY_ANCHORS,
           "yolov4-tiny-3l": V4_ANCHORS, "yolov4": V4_ANCHORS}


def cfg_path(name):
    return CFG_DIR / f"{name}.cfg"


def build(name, size=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CfgWarning (unused/duplicate field) fails the test
        return Darknet.from_cfg(cfg_path(name), size, size)


def options(cfg):
    return [(s.name, {k: o.value for k, o in s.options.items()}) for s in [cfg.net, *cfg.layers]]


def info(*argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["info", *map(str, argv)]) == 0
    return buf.getvalue()


TEACHERS = ["yolov4-tiny-3l-teacher-drivesim"]  # distillation teachers: tests/test_distill.py


def test_shipped_set():
    assert sorted(p.stem for p in CFG_DIR.glob("*.cfg")) == sorted(ALL + TEACHERS)


@pytest.mark.parametrize("name", ALL)
def test_builds_without_warnings(name):
    m = build(name)
    assert m.net.width == m.net.height == (256 if name.endswith("drivesim") else BFLOPS[name][0])
    assert not any(o.unused() for o in [m.cfg.net, *m.cfg.layers])


@pytest.mark.parametrize("name", STANDARD)
def test_info_prints_darknets_bflops(name):
    size, bflops = BFLOPS[name]
    out = info(cfg_path(name))
    assert f"Total BFLOPS {bflops}\n" in out
    assert f"input {size}x{size}x3" in out


def test_yolov4_bflops_at_416_as_readme():
    out = info(cfg_path("yolov4"), "--width", 416, "--height", 416)
    assert "Total BFLOPS 60.137\n" in out  # README: "width=416 height=416 ... 60.1 BFlops"


@pytest.mark.parametrize("name", STANDARD)
def test_layers_and_heads_at_416(name):
    n_layers, heads = STRUCTURE[name]
    m = build(name, 416)
    assert len(m.layers) == n_layers
    assert [y.index for y in m.yolo_layers] == [i for i, _, _ in heads]
    for y, (_, mask, side) in zip(m.yolo_layers, heads):
        assert list(y.mask) == mask
        assert y.classes == 80
        assert (y.in_shape.c, y.in_shape.h, y.in_shape.w) == (255, side, side)
        assert [v for a in y.anchors for v in a] == ANCHORS[name]
    if name == "yolov4":
        return  # 60 BFLOPs: the static shapes above suffice; a forward at 416 is too slow here
    m.train()
    with torch.no_grad():
        raw = m(torch.zeros(1, 3, 416, 416))
    assert [tuple(t.shape) for t in raw] == [(1, 255, s, s) for _, _, s in heads]


def test_yolov4_forward_small_input():
    m = build("yolov4", 128).eval()
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 128, 128))
    assert tuple(out.shape) == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 85)


def test_yolov4_head_options():
    heads = build("yolov4").yolo_layers
    assert [h.scale_x_y for h in heads] == pytest.approx([1.2, 1.1, 1.05])
    assert [h.random for h in heads] == [0, 0, 1]
    for h in heads:
        assert h.iou_loss == "ciou" and h.nms_kind == "greedynms"
        assert (h.iou_thresh, h.iou_normalizer, h.beta_nms, h.max_delta) == pytest.approx((0.213, 0.07, 0.6, 5))
    assert build("yolov4").net.mosaic == 1


# -- DriveSim variants --------------------------------------------------------------------

def test_drivesim_names():
    lines = (CFG_DIR / "drivesim.names").read_text().splitlines()
    assert lines == DRIVESIM_NAMES


@pytest.mark.parametrize("base", DRIVESIM)
def test_drivesim_variant(base):
    m = build(f"{base}-drivesim")
    n = m.net
    assert (n.width, n.height, n.channels, n.batch, n.subdivisions) == (256, 256, 3, 16, 1)
    assert (n.learning_rate, n.burn_in, n.max_batches, n.policy) == (0.002, 100, 3000, "steps")
    assert n.steps == [2400, 2700] and n.scales == pytest.approx([0.1, 0.1]) and n.mosaic == 0
    assert (n.hue, n.saturation, n.exposure) == pytest.approx((0.1, 1.5, 1.5))
    assert m.num_classes == len(DRIVESIM_NAMES)
    want = [math.floor(v * 256 / 416 + 0.5) for v in ANCHORS[base]]
    for y in m.yolo_layers:
        assert y.in_shape.c == (7 + 5) * 3
        assert [v for a in y.anchors for v in a] == want
    m.train()
    with torch.no_grad():
        raw = m(torch.zeros(1, 3, 256, 256))
    sides = [s * 256 // 416 for _, _, s in STRUCTURE[base][1]]
    assert [tuple(t.shape) for t in raw] == [(1, 36, s, s) for s in sides]


@pytest.mark.parametrize("base", DRIVESIM)
def test_drivesim_differs_from_standard_only_where_meant(base):
    std, ds = options(parse_cfg(cfg_path(base))), options(parse_cfg(cfg_path(f"{base}-drivesim")))
    assert [s for s, _ in std] == [s for s, _ in ds]
    net_keys = {"batch", "subdivisions", "width", "height", "learning_rate", "burn_in", "max_batches",
                "steps", "scales", "mosaic"}
    for i, ((name, a), (_, b)) in enumerate(zip(std, ds)):
        changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        if name == "net":
            assert changed <= net_keys
        elif name == "yolo":
            assert changed == {"classes", "anchors"}
        elif name == "convolutional" and std[i + 1][0] == "yolo":
            assert changed == {"filters"} and b["filters"] == "36"
        else:
            assert not changed, f"section {i - 1} [{name}] differs: {sorted(changed)}"
