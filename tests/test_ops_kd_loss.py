"""darknet_kd.ops.kd_loss against plain PyTorch composites, and gradcheck in float64."""
import pytest
import torch
import torch.nn.functional as F

from darknet_kd import ops
from darknet_kd.errors import OpError


def kl_composite(s, t, dim, temperature, weight=None, mask=None):
    """LD's knowledge_distillation_kl_div_loss without the mean over bins, summed over
    locations: T² · KL(softmax(t/T) ‖ softmax(s/T))."""
    per = F.kl_div(F.log_softmax(s / temperature, dim), F.softmax(t / temperature, dim),
                   reduction="none").sum(dim) * temperature ** 2
    return _reduce(per, weight, mask)


def qfl_composite(s, t, dim, beta, weight=None, mask=None):
    """CrossKD's quality-focal BCE against the teacher's sigmoid, summed over the class axis."""
    y = torch.sigmoid(t)
    per = (F.binary_cross_entropy_with_logits(s, y, reduction="none") * (torch.sigmoid(s) - y).abs().pow(beta))
    return _reduce(per.sum(dim), weight, mask)


def _reduce(per, weight, mask):
    if weight is not None:
        per = per * weight
    if mask is not None:
        per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum()


def logits(shape, seed, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


HEAD = (2, 3, 20, 7, 9)  # (B, A, C, H, W): class axis 2, tail of a 16-wide tile


@pytest.mark.parametrize("shape,dim", [(HEAD, 2), ((300, 17), 1), ((5, 33, 1), 1), ((4, 6, 5), -1)])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0])
def test_kl_matches_composite(shape, dim, temperature):
    s = logits(shape, 1).requires_grad_()
    t = logits(shape, 2)
    loc = list(shape)
    del loc[dim]
    w = logits(loc, 3).abs()
    m = logits(loc, 4) > -0.5
    got = ops.kd_loss(s, t, kind="kl", dim=dim, temperature=temperature, weight=w, mask=m)
    s2 = s.detach().clone().requires_grad_()
    want = kl_composite(s2, t, dim, temperature, w, m)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-4)
    got.backward()
    want.backward()
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("shape,dim", [(HEAD, 2), ((300, 17), 1), ((2, 7, 600), 1)])
def test_qfl_matches_composite(shape, dim, beta):
    s = logits(shape, 5).requires_grad_()
    t = logits(shape, 6)
    loc = list(shape)
    del loc[dim]
    w = logits(loc, 7).abs()
    got = ops.kd_loss(s, t, kind="qfl", dim=dim, beta=beta, weight=w)
    s2 = s.detach().clone().requires_grad_()
    want = qfl_composite(s2, t, dim, beta, w)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-4)
    (got * 3).backward()
    (want * 3).backward()
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("kind", ["kl", "qfl"])
@pytest.mark.parametrize("shape,dim", [((2, 5, 3, 18), 1), ((6, 4), 1)])
def test_gradcheck_float64(kind, shape, dim):
    s = logits(shape, 8, scale=1.5, dtype=torch.float64).requires_grad_()
    t = logits(shape, 9, scale=1.5, dtype=torch.float64)
    loc = list(shape)
    del loc[dim]
    w = logits(loc, 10, dtype=torch.float64).abs()
    m = logits(loc, 11) > -1.0
    fn = lambda x: ops.kd_loss(x, t, kind=kind, dim=dim, temperature=2.0, beta=2.0 if kind == "qfl" else 1.0,
                               weight=w, mask=m)
    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-7, rtol=1e-5)
    comp = (lambda x: kl_composite(x, t, dim, 2.0, w, m)) if kind == "kl" else \
        (lambda x: qfl_composite(x, t, dim, 2.0, w, m))
    torch.testing.assert_close(fn(s), comp(s), rtol=1e-12, atol=1e-12)


def test_masked_locations_contribute_nothing_even_if_not_finite():
    s = logits((4, 10, 20), 12).requires_grad_()
    t = logits((4, 10, 20), 13)
    m = torch.ones(4, 20, dtype=torch.bool)
    m[1, 3] = False
    t[1, :, 3] = float("inf")
    s.data[1, :, 3] = float("nan")
    w = torch.ones(4, 20)
    w[2, 5] = 0
    t[2, :, 5] = float("nan")
    for kind in ("kl", "qfl"):
        loss = ops.kd_loss(s, t, kind=kind, weight=w, mask=m)
        assert torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(g).all()
        assert (g[1, :, 3] == 0).all() and (g[2, :, 5] == 0).all()


def test_defaults_teacher_equals_student_and_no_grad_path():
    s = logits((50, 8), 14)
    assert abs(float(ops.kd_loss(s, s.clone(), kind="kl"))) < 1e-4
    qfl = ops.kd_loss(s, s.clone(), kind="qfl")
    assert float(qfl) == 0.0  # |σ(s) − σ(t)| = 0 everywhere
    x = logits((50, 8), 15)
    loss = ops.kd_loss(x, s, kind="kl")  # no grad needed: forward only
    assert not loss.requires_grad
    torch.testing.assert_close(loss, kl_composite(x, s, 1, 1.0), rtol=2e-5, atol=1e-4)


def test_deterministic_across_thread_counts():
    s = logits(HEAD, 16)
    t = logits(HEAD, 17)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ops.kd_loss(s, t, dim=2, temperature=2.0)
        torch.set_num_threads(3)
        b = ops.kd_loss(s, t, dim=2, temperature=2.0)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)


def test_bad_arguments_raise_op_error():
    s = logits((4, 5, 6), 18)
    with pytest.raises(OpError, match="student has dtype float16"):
        ops.kd_loss(s.half(), s.half())
    with pytest.raises(OpError, match="teacher has dtype float64"):
        ops.kd_loss(s, s.double())
    with pytest.raises(OpError, match=r"teacher has shape \(4, 5, 5\)"):
        ops.kd_loss(s, s[..., :5].contiguous())
    with pytest.raises(OpError, match="student is not contiguous"):
        ops.kd_loss(s.transpose(0, 2), s.transpose(0, 2).contiguous())
    with pytest.raises(OpError, match="dim=3 is out of range"):
        ops.kd_loss(s, s, dim=3)
    with pytest.raises(OpError, match="weight has shape"):
        ops.kd_loss(s, s, weight=torch.ones(4, 7))
    with pytest.raises(OpError, match="mask has dtype float32"):
        ops.kd_loss(s, s, mask=torch.ones(4, 6))
    with pytest.raises(OpError, match="temperature=0"):
        ops.kd_loss(s, s, temperature=0)
    with pytest.raises(OpError, match="beta=-1"):
        ops.kd_loss(s, s, kind="qfl", beta=-1)
    with pytest.raises(OpError, match="kind='mse'"):
        ops.kd_loss(s, s, kind="mse")


@pytest.mark.skipif(not torch.cuda.is_available() or not ops.core_info()["cuda_devices"], reason="no CUDA GPU")
@pytest.mark.parametrize("kind", ["kl", "qfl"])
@pytest.mark.parametrize("shape,dim", [(HEAD, 2), ((300, 17), 1)])
def test_cuda_equals_cpu(kind, shape, dim):
    s = logits(shape, 19).requires_grad_()
    t = logits(shape, 20)
    loc = list(shape)
    del loc[dim]
    w = logits(loc, 21).abs()
    cpu = ops.kd_loss(s, t, kind=kind, dim=dim, temperature=2.0, weight=w)
    (gc,) = torch.autograd.grad(cpu, s)
    sg = s.detach().cuda().requires_grad_()
    gpu = ops.kd_loss(sg, t.cuda(), kind=kind, dim=dim, temperature=2.0, weight=w.cuda())
    (gg,) = torch.autograd.grad(gpu, sg)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gg.cpu(), gc, rtol=1e-4, atol=1e-6)
    s64 = s.detach().double().cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.kd_loss(x, t.double().cuda(), kind=kind, dim=dim),
                                    (s64[:2].detach().requires_grad_(),), eps=1e-6, atol=1e-6)
