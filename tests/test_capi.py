"""libdkd's C API through cffi (darknet_kd.capi): every invalid-argument path returns an
error code and a message (never a crash), valid calls agree with darknet_kd.ops, and every
CPU kernel variant (DKD_ISA) gives the same results."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from darknet_kd import capi, ops
from darknet_kd.errors import OpError

ERR = {name: i for i, name in enumerate(["DKD_OK", "DKD_ERR_NULL", "DKD_ERR_SIZE", "DKD_ERR_VALUE", "DKD_ERR_DEVICE",
                                         "DKD_ERR_CUDA", "DKD_ERR_ALLOC", "DKD_ERR_INTERNAL"])}
I64_MAX = 2 ** 63 - 1


@pytest.fixture(scope="module")
def c():
    return capi.lib()


@pytest.fixture(scope="module")
def ffi():
    return capi.ffi()


def ptr(ffi, a, ctype):
    return ffi.cast(ctype, ffi.from_buffer(a)) if a is not None else ffi.NULL


def test_version_and_status_names(c, ffi):
    v = c.dkd_version()
    assert v == c.DKD_VERSION_MAJOR * 10000 + c.DKD_VERSION_MINOR * 100 + c.DKD_VERSION_PATCH
    assert ffi.string(c.dkd_version_string()).decode() == ops.core_info()["version"]
    assert c.dkd_api_version() >= 1
    for name, code in ERR.items():
        assert ffi.string(c.dkd_status_name(code)).decode() == name
        assert getattr(c, name) == code
    assert ffi.string(c.dkd_status_name(999)).decode() == "DKD_UNKNOWN_STATUS"
    assert c.dkd_cuda_compiled() == int(ops.core_info()["cuda_compiled"])
    assert c.dkd_cuda_device_count() >= 0


def test_header_declarations_cover_the_library(ffi, c):
    """The cdef comes from dkd.h; every dkd_* function it declares exists in libdkd."""
    text = capi.header_path().read_text()
    import re
    names = set(re.findall(r"DKD_API\s+[\w\s\*]+?\b(dkd_\w+)\s*\(", text))
    assert {"dkd_nms", "dkd_yolo_decode", "dkd_kd_loss", "dkd_last_error", "dkd_version"} <= names
    for n in names:
        getattr(c, n)  # raises AttributeError if the symbol is missing


def test_threads_and_last_error_are_per_thread(c, ffi):
    assert c.dkd_set_num_threads(-3) == ERR["DKD_ERR_VALUE"]
    assert "negative" in capi.last_error()
    seen = {}

    def other():
        seen["before"] = capi.last_error()
        seen["status"] = c.dkd_set_num_threads(2)
        seen["after"] = capi.last_error()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"before": "", "status": 0, "after": ""}
    assert "negative" in capi.last_error()  # this thread's message is still there
    assert c.dkd_get_num_threads() == 2
    assert c.dkd_set_num_threads(0) == 0 and c.dkd_get_num_threads() >= 1
    with pytest.raises(OpError, match="DKD_ERR_VALUE: set_num_threads"):
        capi.check(c.dkd_set_num_threads(-1))


def nms_call(c, ffi, boxes, scores, batch, n, nc, ni, thr=0.5, sthr=0.0, kind=0, beta=0.6, max_det=0,
             keep="auto", device=0):
    if isinstance(keep, str):
        keep = np.zeros(max(min(n * nc, 64), 1), np.uint8)  # the bad-size calls fail before writing
    return c.dkd_nms(ptr(ffi, boxes, "float*"), ptr(ffi, scores, "float*"), ptr(ffi, batch, "int64_t*"), n, nc, ni,
                     thr, sthr, kind, beta, max_det, ptr(ffi, keep, "uint8_t*"), device, ffi.NULL)


def test_nms_invalid_arguments(c, ffi):
    boxes = np.random.default_rng(0).uniform(0.1, 0.5, (8, 4)).astype(np.float32)
    scores = np.random.default_rng(1).uniform(0, 1, (8, 2)).astype(np.float32)
    batch = np.zeros(8, np.int64)
    ok = dict(boxes=boxes, scores=scores, batch=batch, n=8, nc=2, ni=1)
    assert nms_call(c, ffi, **ok) == 0
    cases = [
        (dict(boxes=None), "DKD_ERR_NULL", "boxes is NULL"),
        (dict(scores=None), "DKD_ERR_NULL", "scores is NULL"),
        (dict(keep=None), "DKD_ERR_NULL", "keep is NULL"),
        (dict(n=-1), "DKD_ERR_SIZE", "n=-1"),
        (dict(nc=0), "DKD_ERR_SIZE", "num_classes=0"),
        (dict(nc=-5), "DKD_ERR_SIZE", "num_classes=-5"),
        (dict(ni=0), "DKD_ERR_SIZE", "num_images=0"),
        (dict(max_det=-2), "DKD_ERR_SIZE", "max_det=-2"),
        (dict(n=I64_MAX // 2), "DKD_ERR_SIZE", "overflows"),
        (dict(nc=2 ** 31, n=1), "DKD_ERR_SIZE", "num_classes"),
        (dict(ni=I64_MAX // 2, nc=4), "DKD_ERR_SIZE", "num_images * num_classes"),
        (dict(thr=float("nan")), "DKD_ERR_VALUE", "iou_thresh=nan"),
        (dict(thr=float("inf")), "DKD_ERR_VALUE", "iou_thresh=inf"),
        (dict(sthr=float("nan")), "DKD_ERR_VALUE", "score_thresh=nan"),
        (dict(kind=3), "DKD_ERR_VALUE", "kind=3"),
        (dict(kind=-1), "DKD_ERR_VALUE", "kind=-1"),
        (dict(kind=2, beta=0.0), "DKD_ERR_VALUE", "beta_nms=0"),
        (dict(kind=2, beta=float("nan")), "DKD_ERR_VALUE", "beta_nms=nan"),
        (dict(batch=np.full(8, 1, np.int64)), "DKD_ERR_VALUE", "batch[0]=1 is outside [0, 1)"),
        (dict(batch=np.array([0] * 7 + [-1], np.int64)), "DKD_ERR_VALUE", "batch[7]=-1"),
        (dict(device=2), "DKD_ERR_DEVICE", "device=2"),
        (dict(device=-1), "DKD_ERR_DEVICE", "device=-1"),
    ]
    if not c.dkd_cuda_compiled():
        cases.append((dict(device=1), "DKD_ERR_DEVICE", "built without CUDA"))
    for change, status, message in cases:
        st = nms_call(c, ffi, **{**ok, **change})
        assert st == ERR[status], (change, capi.last_error())
        assert message in capi.last_error(), (change, capi.last_error())
    # n = 0 accepts NULL arrays.
    assert nms_call(c, ffi, None, None, None, 0, 3, 1, keep=None) == 0


def test_nms_agrees_with_ops(c, ffi):
    g = torch.Generator().manual_seed(2)
    boxes = torch.cat([torch.rand(500, 2, generator=g), torch.rand(500, 2, generator=g) * 0.3], 1)
    scores = torch.rand(500, 3, generator=g)
    batch = torch.randint(0, 2, (500,), generator=g)
    keep = np.zeros(1500, np.uint8)
    assert nms_call(c, ffi, boxes.numpy(), scores.numpy(), batch.numpy(), 500, 3, 2, 0.45, 0.2, 1, 0.6, 30,
                    keep) == 0
    want = ops.nms_mask(boxes, scores, 0.45, score_thresh=0.2, batch=batch, kind="greedynms", max_det=30)
    assert np.array_equal(keep.reshape(500, 3).astype(bool), want.numpy())


def decode_call(c, ffi, head="auto", shape=(1, 14, 2, 3), strides="auto", na=2, anchors="auto", nw=64, nh=64, sxy=1.0,
                nc=0, thr=0.3, lb=None, out="auto", index="auto", cap=12, count="auto", device=0):
    shape_a = None if shape is None else np.array(shape, np.int64)
    if isinstance(strides, str):
        strides = np.array([84, 6, 3, 1], np.int64)
    if isinstance(head, str):
        head = np.random.default_rng(3).normal(size=84).astype(np.float32)
    if isinstance(anchors, str):
        anchors = np.array([10, 12, 20, 24], np.float32)
    if isinstance(out, str):  # the bad-size calls fail before writing
        out = np.zeros((min(max(cap, 1), 64), 7), np.float32)
    if isinstance(index, str):
        index = np.zeros(min(max(cap, 1), 64), np.int64)
    if isinstance(count, str):
        count = np.zeros(1, np.int64)
    st = c.dkd_yolo_decode(ptr(ffi, head, "float*"), ptr(ffi, shape_a, "int64_t*"), ptr(ffi, strides, "int64_t*"), na,
                           ptr(ffi, anchors, "float*"), nw, nh, sxy, nc, thr, ptr(ffi, lb, "int32_t*"),
                           ptr(ffi, out, "float*"), ptr(ffi, index, "int64_t*"), cap, ptr(ffi, count, "int64_t*"),
                           device, ffi.NULL)
    return st, out, index, count


def test_yolo_decode_invalid_arguments(c, ffi):
    st, out, index, count = decode_call(c, ffi)
    assert st == 0 and 0 < count[0] <= 12
    head = np.random.default_rng(3).normal(size=84).astype(np.float32)
    got = ops.yolo_decode(torch.from_numpy(head).view(1, 14, 2, 3), [(10, 12), (20, 24)], 64, 64, 0.3)
    assert np.allclose(out[:count[0]], got.rows.numpy()) and np.array_equal(index[:count[0]], got.index.numpy())
    cases = [
        (dict(shape=None), "DKD_ERR_NULL", "shape is NULL"),
        (dict(strides=None), "DKD_ERR_NULL", "strides is NULL"),
        (dict(anchors=None), "DKD_ERR_NULL", "anchors is NULL"),
        (dict(count=None), "DKD_ERR_NULL", "num_candidates is NULL"),
        (dict(out=None), "DKD_ERR_NULL", "out is NULL"),
        (dict(index=None), "DKD_ERR_NULL", "out_index is NULL"),
        (dict(head=None), "DKD_ERR_NULL", "head is NULL"),
        (dict(shape=(-1, 14, 2, 3)), "DKD_ERR_SIZE", "shape[0] (batch)=-1"),
        (dict(shape=(1, 0, 2, 3)), "DKD_ERR_SIZE", "shape[1] (channels)=0"),
        (dict(shape=(1, 14, -2, 3)), "DKD_ERR_SIZE", "shape[2] (height)=-2"),
        (dict(shape=(1, 14, 2, -3)), "DKD_ERR_SIZE", "shape[3] (width)=-3"),
        (dict(shape=(1, 15, 2, 3)), "DKD_ERR_SIZE", "num_anchors*(5+classes)"),
        (dict(shape=(1, 10, 2, 3)), "DKD_ERR_SIZE", "classes >= 1"),
        (dict(na=0), "DKD_ERR_SIZE", "num_anchors=0"),
        (dict(strides=np.array([84, -6, 3, 1], np.int64)), "DKD_ERR_SIZE", "strides[1]=-6"),
        (dict(shape=(3, 14, 2, 3), strides=np.array([I64_MAX // 2, 6, 3, 1], np.int64)), "DKD_ERR_SIZE", "extent"),
        (dict(shape=(I64_MAX // 4, 14, I64_MAX // 4, 3)), "DKD_ERR_SIZE", "overflows"),
        (dict(nw=0), "DKD_ERR_SIZE", "net_w=0"),
        (dict(nh=-64), "DKD_ERR_SIZE", "net_h=-64"),
        (dict(cap=-1), "DKD_ERR_SIZE", "capacity=-1"),
        (dict(cap=I64_MAX // 2), "DKD_ERR_SIZE", "capacity * (5+classes)"),
        (dict(sxy=float("inf")), "DKD_ERR_VALUE", "scale_x_y=inf"),
        (dict(thr=float("nan")), "DKD_ERR_VALUE", "thresh is NaN"),
        (dict(nc=2), "DKD_ERR_VALUE", "new_coords=2"),
        (dict(lb=np.array([0, 480], np.int32)), "DKD_ERR_VALUE", "letterbox image size of image 0 is 0x480"),
        (dict(lb=np.array([640, -1], np.int32)), "DKD_ERR_VALUE", "640x-1"),
        (dict(device=7), "DKD_ERR_DEVICE", "device=7"),
    ]
    for change, status, message in cases:
        st = decode_call(c, ffi, **change)[0]
        assert st == ERR[status], (change, capi.last_error())
        assert message in capi.last_error(), (change, capi.last_error())
    # Count only (NULL outputs, capacity 0), and a capacity smaller than the count.
    st, _, _, count = decode_call(c, ffi, out=None, index=None, cap=0)
    assert st == 0 and count[0] > 1
    st, out, index, count2 = decode_call(c, ffi, cap=1)
    assert st == 0 and count2[0] == count[0]


def kd_call(c, ffi, s="auto", t="auto", w=None, m=None, outer=2, k=5, inner=3, kind=0, temp=1.0, beta=1.0, dtype=0,
            loss="auto", grad="auto", device=0):
    rng = np.random.default_rng(4)
    np_t = np.float32 if dtype != 1 else np.float64
    if isinstance(s, str):
        s = rng.normal(size=30).astype(np_t)
    if isinstance(t, str):
        t = rng.normal(size=30).astype(np_t)
    if isinstance(loss, str):
        loss = np.zeros(1, np_t)
    if isinstance(grad, str):
        grad = np.zeros(30, np_t)
    st = c.dkd_kd_loss(ptr(ffi, s, "void*"), ptr(ffi, t, "void*"), ptr(ffi, w, "void*"), ptr(ffi, m, "uint8_t*"),
                       outer, k, inner, kind, temp, beta, dtype, ptr(ffi, loss, "void*"), ptr(ffi, grad, "void*"),
                       device, ffi.NULL)
    return st, loss, grad


def test_kd_loss_invalid_arguments(c, ffi):
    st, loss, grad = kd_call(c, ffi, w=np.ones(6, np.float32), m=np.ones(6, np.uint8))
    assert st == 0 and loss[0] > 0
    rng = np.random.default_rng(4)
    s = torch.from_numpy(rng.normal(size=30).astype(np.float32)).view(2, 5, 3)
    t = torch.from_numpy(rng.normal(size=30).astype(np.float32)).view(2, 5, 3)
    assert np.isclose(loss[0], float(ops.kd_loss(s, t)), rtol=1e-6)
    cases = [
        (dict(s=None), "DKD_ERR_NULL", "student is NULL"),
        (dict(t=None), "DKD_ERR_NULL", "teacher is NULL"),
        (dict(loss=None), "DKD_ERR_NULL", "loss is NULL"),
        (dict(outer=-1), "DKD_ERR_SIZE", "outer=-1"),
        (dict(k=0), "DKD_ERR_SIZE", "k=0"),
        (dict(inner=-4), "DKD_ERR_SIZE", "inner=-4"),
        (dict(outer=I64_MAX // 2, inner=4), "DKD_ERR_SIZE", "overflows"),
        (dict(outer=I64_MAX // 64, k=64, inner=8), "DKD_ERR_SIZE", "outer * k * inner"),
        (dict(kind=2), "DKD_ERR_VALUE", "kind=2"),
        (dict(temp=0.0), "DKD_ERR_VALUE", "temperature=0"),
        (dict(temp=-2.0), "DKD_ERR_VALUE", "temperature=-2"),
        (dict(temp=float("nan")), "DKD_ERR_VALUE", "temperature=nan"),
        (dict(kind=1, beta=0.0), "DKD_ERR_VALUE", "beta=0"),
        (dict(kind=1, beta=float("inf")), "DKD_ERR_VALUE", "beta=inf"),
        (dict(dtype=5), "DKD_ERR_VALUE", "dtype=5"),
        (dict(device=3), "DKD_ERR_DEVICE", "device=3"),
    ]
    for change, status, message in cases:
        st = kd_call(c, ffi, **change)[0]
        assert st == ERR[status], (change, capi.last_error())
        assert message in capi.last_error(), (change, capi.last_error())
    # No locations: NULL logits are fine, the loss is 0.
    st, loss, _ = kd_call(c, ffi, s=None, t=None, outer=0, grad=None)
    assert st == 0 and loss[0] == 0
    # float64 path, gradient optional.
    st, loss64, _ = kd_call(c, ffi, dtype=1, grad=None)
    rng = np.random.default_rng(4)
    s64, t64 = (torch.from_numpy(rng.normal(size=30)).view(2, 5, 3) for _ in range(2))
    assert st == 0 and np.isclose(loss64[0], float(ops.kd_loss(s64, t64)), rtol=1e-12)


ISA_SCRIPT = r"""
import json, sys
import numpy as np
from darknet_kd import capi
c, ffi = capi.lib(), capi.ffi()
P = lambda a, t: ffi.cast(t, ffi.from_buffer(a))
rng = np.random.default_rng(11)
n, nc, ni = 3000, 3, 2
boxes = np.concatenate([rng.uniform(0, 1, (n, 2)), rng.uniform(0.02, 0.3, (n, 2))], 1).astype(np.float32)
scores = rng.uniform(0, 1, (n, nc)).astype(np.float32)
batch = rng.integers(0, ni, n).astype(np.int64)
out = {"isa": ffi.string(c.dkd_cpu_isa()).decode()}
for kind in (0, 1, 2):
    keep = np.zeros(n * nc, np.uint8)
    assert c.dkd_nms(P(boxes, "float*"), P(scores, "float*"), P(batch, "int64_t*"), n, nc, ni, 0.45, 0.1, kind,
                     0.7, 100, P(keep, "uint8_t*"), 0, ffi.NULL) == 0, capi.last_error()
    out[f"nms{kind}"] = np.flatnonzero(keep).tolist()
for shape in ((4, 3, 80, 13, 21), (500, 37, 1)):
    s = rng.normal(size=shape).astype(np.float32) * 3
    t = rng.normal(size=shape).astype(np.float32) * 3
    outer = shape[0] * shape[1] if len(shape) == 5 else shape[0]
    k = shape[2] if len(shape) == 5 else shape[1]
    inner = shape[3] * shape[4] if len(shape) == 5 else 1
    for kind in (0, 1):
        loss = np.zeros(1, np.float32); grad = np.zeros(s.size, np.float32)
        assert c.dkd_kd_loss(P(s, "void*"), P(t, "void*"), ffi.NULL, ffi.NULL, outer, k, inner, kind, 2.0, 1.5, 0,
                             P(loss, "void*"), P(grad, "void*"), 0, ffi.NULL) == 0, capi.last_error()
        out[f"kd{kind}_{len(shape)}"] = [float(loss[0]), grad[::97].tolist()]
json.dump(out, sys.stdout)
"""


@pytest.mark.skipif(ops.core_info()["cpu_isa"] == "base", reason="this CPU runs only the base kernels")
def test_every_cpu_isa_variant_agrees():
    """DKD_ISA forces the base / avx2 build of the kernels: NMS keep sets are identical,
    kd_loss agrees to float rounding (FMA and vector widths differ)."""
    results = {}
    for isa in ("base", "avx2", ops.core_info()["cpu_isa"]):
        env = dict(os.environ, DKD_ISA=isa)
        out = subprocess.run([sys.executable, "-c", ISA_SCRIPT], env=env, check=True, capture_output=True, text=True)
        results[isa] = json.loads(out.stdout)
        assert results[isa]["isa"] == isa
    best = results[ops.core_info()["cpu_isa"]]
    for isa, r in results.items():
        for key in best:
            if key.startswith("nms"):
                assert r[key] == best[key], (isa, key)
            elif key.startswith("kd"):
                assert np.isclose(r[key][0], best[key][0], rtol=1e-5), (isa, key)
                assert np.allclose(r[key][1], best[key][1], rtol=1e-4, atol=1e-6), (isa, key)
