"""darknet_kd.ops.yolo_decode against Yolo.decode (model/layers.py), the PyTorch path."""
import pytest
import torch

from darknet_kd import ops
from darknet_kd.errors import OpError
from darknet_kd.model import Darknet
from ops_reference import correct_letterbox

ANCHORS = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"


def yolo_layer(tmp_path, classes=3, mask="3,4,5", scale_x_y=1.0, new_coords=0, width=96, height=64):
    na = len(mask.split(","))
    cfg = tmp_path / "y.cfg"
    cfg.write_text(f"""[net]
width={width}
height={height}
channels=3

[convolutional]
filters={na * (classes + 5)}
size=1
stride=1
activation=linear

[yolo]
mask={mask}
anchors={ANCHORS}
classes={classes}
num=6
scale_x_y={scale_x_y}
new_coords={new_coords}
""")
    return Darknet.from_cfg(cfg).eval().yolo_layers[0]


def expected(layer, head, thresh, net_hw=None):
    dec = layer.decode(head, net_hw)  # (B, A*H*W, 5+C)
    b, r = (dec[..., 4] > thresh).nonzero(as_tuple=True)
    return dec[b, r], b, r, dec


def check(got, layer, head, thresh, net_hw=None, atol=2e-6):
    rows, b, r, dec = expected(layer, head, thresh, net_hw)
    # Rows whose objectness is within an ulp of the threshold may fall either way
    # (torch.sigmoid vs expf); the random data here has none.
    assert not ((dec[..., 4] - thresh).abs() < 1e-6).any()
    assert torch.equal(got.batch, b) and torch.equal(got.index, r)
    torch.testing.assert_close(got.rows, rows, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("scale_x_y,new_coords", [(1.0, 0), (1.05, 0), (2.0, 1), (1.2, 1)])
def test_matches_yolo_decode(tmp_path, scale_x_y, new_coords):
    layer = yolo_layer(tmp_path, scale_x_y=scale_x_y, new_coords=new_coords)
    g = torch.Generator().manual_seed(1)
    head = torch.randn(3, 24, 8, 12, generator=g) * 2
    if new_coords:  # the conv before a new_coords [yolo] is logistic
        head = torch.sigmoid(head)
    thresh = 0.5 if new_coords else 0.25
    got = ops.yolo_decode_layer(layer, head, thresh)
    check(got, layer, head, thresh)
    assert 0 < len(got.index) < head.numel() // 8


def test_strided_head_and_other_net_size(tmp_path):
    layer = yolo_layer(tmp_path, classes=80, mask="0,1,2")
    g = torch.Generator().manual_seed(2)
    big = torch.randn(2, 300, 13, 13, generator=g)
    head = big[:, 10:10 + 255]  # a channel slice: not contiguous, decoded in place
    assert not head.is_contiguous()
    got = ops.yolo_decode_layer(layer, head, 0.3, net_wh=(416, 416))
    check(got, layer, head, 0.3, net_hw=(416, 416))
    cl = head.contiguous(memory_format=torch.channels_last)
    got2 = ops.yolo_decode_layer(layer, cl, 0.3, net_wh=(416, 416))
    assert torch.equal(got2.rows, got.rows) and torch.equal(got2.index, got.index)


def test_letterbox_correction(tmp_path):
    layer = yolo_layer(tmp_path)
    g = torch.Generator().manual_seed(3)
    head = torch.randn(3, 24, 8, 12, generator=g)
    sizes = [(640, 480), (300, 900), (96, 64)]
    got = ops.yolo_decode_layer(layer, head, 0.25, letterbox_wh=sizes)
    rows, b, _, _ = expected(layer, head, 0.25)
    for i, (w, h) in enumerate(sizes):
        want = correct_letterbox(rows[b == i], w, h, 96, 64)
        torch.testing.assert_close(got.rows[got.batch == i], want, atol=2e-6, rtol=1e-6)
    # The image with the network's own aspect ratio is unchanged.
    torch.testing.assert_close(got.rows[got.batch == 2], rows[b == 2], atol=2e-6, rtol=1e-6)


def test_threshold_is_strict_and_empty_results(tmp_path):
    layer = yolo_layer(tmp_path, new_coords=1, scale_x_y=2.0)
    head = torch.zeros(1, 24, 2, 2)
    head[0, 4, 0, 0] = 0.5  # new_coords: objectness taken as is
    head[0, 4, 1, 1] = 0.6
    assert ops.yolo_decode_layer(layer, head, 0.5).index.tolist() == [3]
    assert ops.yolo_decode_layer(layer, head, 0.7).rows.shape == (0, 8)
    assert ops.yolo_decode_layer(layer, torch.zeros(0, 24, 2, 2), 0.1).rows.shape == (0, 8)
    assert ops.yolo_decode_layer(layer, torch.zeros(2, 24, 0, 5), 0.1).rows.shape == (0, 8)


def test_bad_arguments_raise_op_error(tmp_path):
    layer = yolo_layer(tmp_path)
    head = torch.randn(1, 24, 4, 4)
    with pytest.raises(OpError, match="head has dtype float64"):
        ops.yolo_decode_layer(layer, head.double(), 0.5)
    with pytest.raises(OpError, match="expected 4 dimensions"):
        ops.yolo_decode_layer(layer, head[0], 0.5)
    with pytest.raises(OpError, match="25 channels"):
        ops.yolo_decode_layer(layer, torch.randn(1, 25, 4, 4), 0.5)
    with pytest.raises(OpError, match="letterbox_wh has 2 sizes"):
        ops.yolo_decode_layer(layer, head, 0.5, letterbox_wh=[(10, 10), (20, 20)])
    with pytest.raises(OpError, match="non-positive"):
        ops.yolo_decode_layer(layer, head, 0.5, letterbox_wh=[(0, 10)])
    with pytest.raises(OpError, match="net_w=0"):
        ops.yolo_decode(head, [(1, 1)] * 3, 0, 10, 0.5)
    with pytest.raises(OpError, match="thresh is NaN"):
        ops.yolo_decode(head, [(1, 1)] * 3, 10, 10, float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available() or not ops.core_info()["cuda_devices"], reason="no CUDA GPU")
@pytest.mark.parametrize("new_coords", [0, 1])
def test_cuda_equals_cpu(tmp_path, new_coords):
    layer = yolo_layer(tmp_path, classes=80, mask="0,1,2", scale_x_y=1.05, new_coords=new_coords)
    head = torch.randn(4, 255, 52, 52, generator=torch.Generator().manual_seed(4))
    if new_coords:
        head = torch.sigmoid(head)
    cpu = ops.yolo_decode_layer(layer, head, 0.3, letterbox_wh=[(640, 480)] * 4)
    gpu = ops.yolo_decode_layer(layer, head.cuda(), 0.3, letterbox_wh=[(640, 480)] * 4)
    assert torch.equal(gpu.index.cpu(), cpu.index) and torch.equal(gpu.batch.cpu(), cpu.batch)
    torch.testing.assert_close(gpu.rows.cpu(), cpu.rows, atol=1e-6, rtol=1e-6)
