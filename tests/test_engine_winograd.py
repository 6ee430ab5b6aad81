"""The engine's fast paths and their tools (csrc/engine/layers/winograd.*, the per-layer
profile, `dkd detect LIST`):

- Winograd F(4x4, 3x3) and F(2x2, 3x3) equal the PyTorch model (raw heads, 1e-4) on geometries that stress
  it: outputs not a multiple of 4, padding 0 and 2, channel counts that are not a multiple
  of 16, a channel-slice view (grouped route) as input, every activation kind (fused, oneDNN
  eltwise after it, the engine's own), both of its schedules (tile blocks per thread for
  small filters, three whole-layer passes for large ones), batch 1 and 3, 1 and 2 threads;
  and it really runs (its heads differ in the last bits from the direct convolution's);
- `Net.profile()` / `dkd bench --profile` give one row per layer whose times add up;
- relative paths in a `dkd detect` list file resolve as darknet_kd.data.read_list does.
"""
from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest
import torch

from darknet_kd.engine import Net
from darknet_kd.errors import DarknetKDError
from test_engine import ROOT, dkd_binary, random_model, text_model

# 3x3 stride-1 convolutions with >= 16 channels in and out are Winograd's (DKD_WINOGRAD=1:
# F(4x4), =2: F(2x2), =0: none).
WINO = """[net]
width=64
height=60
channels=3

[convolutional]
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=24
size=3
stride=1
pad=1
activation=mish

[convolutional]
filters=40
size=3
stride=1
pad=1
activation=relu

[route]
layers=-1
groups=2
group_id=1

[convolutional]
filters=32
size=3
stride=1
padding=0
activation=linear

[convolutional]
batch_normalize=1
filters=96
size=3
stride=1
pad=1
activation=logistic

[convolutional]
filters=100
size=3
stride=1
padding=2
activation=hard_mish

[convolutional]
filters=17
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def _model(tmp_path):
    return text_model(tmp_path, "wino", WINO, 11)


@pytest.mark.parametrize("batch,threads", [(1, 2), (3, 1)])
def test_winograd_equals_pytorch(tmp_path, monkeypatch, batch, threads):
    model, cfg, w = _model(tmp_path)
    x = np.random.RandomState(batch).rand(batch, 3, 60, 64).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), raw=True)[0].numpy()
        rows = model(torch.from_numpy(x)).numpy()
    heads = {}
    for mode in ("1", "2", "0"):
        monkeypatch.setenv("DKD_WINOGRAD", mode)
        net = Net(cfg, w, threads=threads)
        out = net.forward(x)
        heads[mode] = net.heads()[0].copy()
        assert np.abs(heads[mode] - ref).max() < 1e-4 * max(1.0, np.abs(ref).max()), mode
        assert np.abs(out - rows).max() < 1e-4, mode
        net.close()
    # three different algorithms ran
    assert not np.array_equal(heads["1"], heads["0"]) and not np.array_equal(heads["2"], heads["0"])
    assert not np.array_equal(heads["1"], heads["2"])


def test_winograd_is_taken_by_default_on_large_maps(tmp_path, monkeypatch):
    """Without the variable the planner takes F(4x4) where there are enough tiles (a batch
    of 3 64x60 maps here), F(2x2) where only its smaller tiles are enough (16x16 and 14x14
    maps: at most 16 tiles of 4x4, at least 49 of 2x2), and leaves Winograd off where there
    are few (8x8 maps)."""
    model, cfg, w = _model(tmp_path)
    monkeypatch.delenv("DKD_WINOGRAD", raising=False)
    x = np.random.RandomState(0).rand(3, 3, 60, 64).astype(np.float32)
    net = Net(cfg, w)
    net.forward(x)
    default = net.heads()[0].copy()
    monkeypatch.setenv("DKD_WINOGRAD", "1")
    forced = Net(cfg, w)
    forced.forward(x)
    assert np.array_equal(default, forced.heads()[0])
    monkeypatch.delenv("DKD_WINOGRAD")
    small = Net(cfg, w, width=8, height=8)
    xs = np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32)
    small.forward(xs)
    monkeypatch.setenv("DKD_WINOGRAD", "0")
    direct = Net(cfg, w, width=8, height=8)
    direct.forward(xs)
    assert np.array_equal(small.heads()[0], direct.heads()[0])
    xm = np.random.RandomState(1).rand(1, 3, 16, 16).astype(np.float32)
    heads = {}
    for mode in (None, "2", "0"):
        if mode is None:
            monkeypatch.delenv("DKD_WINOGRAD")
        else:
            monkeypatch.setenv("DKD_WINOGRAD", mode)
        mid = Net(cfg, w, width=16, height=16)
        mid.forward(xm)
        heads[mode] = mid.heads()[0].copy()
    assert np.array_equal(heads[None], heads["2"]) and not np.array_equal(heads[None], heads["0"])


def test_profile(tmp_path):
    model, cfg, w = _model(tmp_path)
    net = Net(cfg, w)
    with pytest.raises(DarknetKDError, match="no forward"):
        net.profile()
    x = np.random.RandomState(0).rand(2, 3, 60, 64).astype(np.float32)
    for _ in range(3):
        net.forward(x)
    text = net.profile()
    lines = text.splitlines()
    assert "batch 2" in lines[0] and "3 forwards" in lines[0]
    rows = lines[1:-1]
    assert len(rows) == 10 and [int(r.split()[0]) for r in rows] == list(range(10))
    ms = [float(r[35:45]) for r in rows]
    total = float(lines[-1].split()[1])
    assert all(m >= 0 for m in ms) and total > 0 and abs(sum(ms) - total) < 0.02 + 1e-3 * total
    assert max(ms[:8]) > 0  # the convolutions took time
    assert net.profile() == text  # asked again: the same table
    net.forward(x)
    assert "1 forwards" in net.profile().splitlines()[0]  # then it started over
    # the CLI prints the same kind of table after its timed runs
    r = subprocess.run([dkd_binary(), "bench", cfg, w, "--runs", "2", "--warmup", "1", "--profile"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 forwards" in r.stdout and "Total" in r.stdout and " 9 yolo" in r.stdout


def test_detect_list_paths_relative_to_the_list(tmp_path):
    """A list file's relative paths: from the current folder when they exist there, else
    from the list's folder (darknet_kd.data.read_list); a missing one is named that way."""
    _, cfg, w = random_model(ROOT / "cfg" / "yolov4-tiny-drivesim.cfg", 64, tmp_path)
    d = tmp_path / "set"
    (d / "img").mkdir(parents=True)
    img = np.random.RandomState(0).randint(0, 256, (48, 64, 3)).astype(np.uint8)
    cv2.imwrite(str(d / "img" / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.png"), img)
    lst = d / "list.txt"
    lst.write_text("img/a.png\nb.png\n")  # a.png beside the list, b.png in the current folder
    out = tmp_path / "out.json"
    r = subprocess.run([dkd_binary(), "detect", cfg, w, "set/list.txt", "--json", out, "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [f["filename"] for f in json.loads(out.read_text())] == ["set/img/a.png", "b.png"]
    lst.write_text("img/missing.png\n")
    r = subprocess.run([dkd_binary(), "detect", cfg, w, "set/list.txt"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "set/img/missing.png" in r.stderr


def _conv(filters, size=3, act="leaky", bn=0):
    return f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride=1\npad=1\nactivation={act}\n\n"


# Plain [route] concats whose Winograd producers write straight into their channel slice
# (Plan::concat_slot): sources in reverse order, a producer also read through a grouped
# route (a view of a view), one producer in two concats (the second copies), one source
# twice, a 1x1 convolution and an upsample beside them (copied), a non-fused activation
# (mish: a oneDNN eltwise on the strided slice).
CONCAT = ("[net]\nwidth=40\nheight=36\nchannels=3\n\n" + _conv(16)                        # 0
          + _conv(32, act="mish", bn=1)                                                   # 1
          + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n"                                # 2: 16 ch of 1
          + _conv(16)                                                                     # 3
          + _conv(20, act="relu")                                                         # 4
          + "[route]\nlayers=-1,-2,1\n\n"                                                 # 5: 20+16+32
          + _conv(16, size=1)                                                             # 6
          + "[route]\nlayers=-1,-3,-3\n\n"                                                # 7: 16+20+20
          + "[maxpool]\nsize=2\nstride=2\n\n"                                             # 8
          + _conv(32)                                                                     # 9
          + "[upsample]\nstride=2\n\n"                                                    # 10
          + "[route]\nlayers=-1,1\n\n"                                                    # 11: 32+32
          + _conv(18, size=1, act="linear")                                               # 12
          + "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=1\nnum=3\n")


@pytest.mark.parametrize("batch,threads", [(1, 2), (2, 1)])
def test_concat_written_in_place(tmp_path, monkeypatch, batch, threads):
    model, cfg, w = text_model(tmp_path, "concat", CONCAT, 5)
    x = np.random.RandomState(batch).rand(batch, 3, 36, 40).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), raw=True)[0].numpy()
    monkeypatch.setenv("DKD_WINOGRAD", "1")
    net = Net(cfg, w, threads=threads)
    net.forward(x)
    head = net.heads()[0]
    assert np.abs(head - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    for _ in range(2):
        net.forward(x)
    rows = net.profile().splitlines()[1:-1]
    ms = {int(r.split()[0]): float(r[35:45]) for r in rows}
    assert ms[5] == 0  # its three Winograd sources wrote in place: the route has no step
    assert ms[7] > 0 and ms[11] > 0  # a 1x1 conv, an upsample, producers of earlier concats: copied
    net.close()
