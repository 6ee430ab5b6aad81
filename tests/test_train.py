"""The trainer: Darknet's schedule and update rule, checkpoints, exact resume, DDP."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from darknet_kd.errors import CheckpointError
from darknet_kd.model import Darknet
from darknet_kd.train.checkpoint import load_checkpoint
from darknet_kd.train.schedule import darknet_sgd, learning_rate
from darknet_kd.train.trainer import Trainer, TrainOptions

from synthetic import make_rect_dataset, tiny_cfg


def _net(**kw):
    base = dict(learning_rate=0.01, burn_in=100, power=4.0, policy="steps", steps=[400, 450], scales=[0.1, 0.1],
                step=1, scale=1.0, gamma=1.0, max_batches=500)
    base.update(kw)
    return SimpleNamespace(**base)


def test_learning_rate_follows_darknet():
    net = _net()
    assert learning_rate(net, 0) == 0.0
    assert learning_rate(net, 50) == pytest.approx(0.01 * 0.5 ** 4)
    assert learning_rate(net, 100) == pytest.approx(0.01)
    assert learning_rate(net, 399) == pytest.approx(0.01)
    assert learning_rate(net, 400) == pytest.approx(0.001)  # steps_i <= batch_num
    assert learning_rate(net, 450) == pytest.approx(0.0001)
    assert learning_rate(net, 200, ngpus=2) == pytest.approx(0.02)
    assert learning_rate(_net(policy="poly", burn_in=0, power=2.0), 250) == pytest.approx(0.01 * 0.25)
    assert learning_rate(_net(policy="step", burn_in=0, step=100, scale=0.5), 250) == pytest.approx(0.0025)


def test_sgd_equals_darknet_update_rule(tmp_path):
    """torch SGD on loss/B == Darknet's  u -= decay*B*w; w += lr/B*u; u *= momentum  (biases: no decay)."""
    torch.manual_seed(0)
    model = Darknet.from_cfg(tiny_cfg(tmp_path))
    net = model.net
    net.decay, net.momentum, batch = 0.01, 0.9, 4
    opt = darknet_sgd(model, net)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    upd = {n: torch.zeros_like(p) for n, p in ref.items()}
    for step in range(3):
        lr = 0.05 * (step + 1)
        grads = {n: torch.randn_like(p) for n, p in ref.items()}  # gradient of the summed loss
        for g in opt.param_groups:
            g["lr"] = lr
        for n, p in model.named_parameters():
            p.grad = grads[n] / batch
        opt.step()
        for n in ref:  # Darknet, with delta = -gradient accumulated into the update
            upd[n] += -grads[n]
            if ref[n].ndim > 1:
                upd[n] += -net.decay * batch * ref[n]
            ref[n] += lr / batch * upd[n]
            upd[n] *= net.momentum
    for n, p in model.named_parameters():
        assert torch.allclose(p, ref[n], atol=1e-5), n


def _opts(**kw):
    base = dict(workers=0, save_every=3, progress=False, deterministic=True, seed=5, chart=True)
    base.update(kw)
    return TrainOptions(**base)


def test_training_writes_darknet_outputs_and_lowers_the_loss(tmp_path):
    data = make_rect_dataset(tmp_path / "ds", n=8, valid=False)
    cfg = tiny_cfg(tmp_path)
    s = Trainer(data, cfg, None, _opts(max_batches=12)).run()
    backup = tmp_path / "ds" / "backup"
    for f in ("tiny_last.weights", "tiny_final.weights", "tiny_last.ckpt", "chart.png", "tiny_summary.json"):
        assert (backup / f).exists(), f
    ck = load_checkpoint(backup / "tiny_last.ckpt")
    losses = ck["history"]["loss"]
    assert ck["iteration"] == 12 and len(losses) == 12 and losses[-1] < losses[0]
    m = Darknet.from_cfg(cfg)
    m.load_weights(backup / "tiny_final.weights")
    assert m.seen == 12 * 4  # iterations * batch, in the header as Darknet writes it
    assert s["iterations"] == 12


def test_resume_reaches_the_same_weights(tmp_path):
    data = make_rect_dataset(tmp_path / "ds", n=6, valid=False)
    cfg = tiny_cfg(tmp_path)
    Trainer(data, cfg, None, _opts(max_batches=9, backup=str(tmp_path / "full"))).run()

    class Killed(Exception):
        pass

    class Dies(Trainer):
        def after_update(self):
            if self.iteration == 5:  # killed after the checkpoint at iteration 3, mid-way to 6
                raise Killed

    with pytest.raises(Killed):
        Dies(data, cfg, None, _opts(max_batches=9, backup=str(tmp_path / "part"))).run()
    Trainer(data, cfg, None, _opts(max_batches=9, backup=str(tmp_path / "part"), resume=True)).run()
    a = (tmp_path / "full" / "tiny_final.weights").read_bytes()
    b = (tmp_path / "part" / "tiny_final.weights").read_bytes()
    assert a == b


def test_resume_refuses_a_foreign_checkpoint(tmp_path):
    data = make_rect_dataset(tmp_path / "ds", n=4, valid=False)
    cfg = tiny_cfg(tmp_path)
    Trainer(data, cfg, None, _opts(max_batches=3)).run()
    (tmp_path / "other").mkdir()
    other = tiny_cfg(tmp_path / "other", learning_rate="0.02")
    with pytest.raises(CheckpointError, match="different cfg"):
        Trainer(data, other, None, _opts(max_batches=3, resume=True))
    (tmp_path / "ds" / "backup" / "tiny_last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="tiny_last.ckpt"):
        Trainer(data, cfg, None, _opts(max_batches=3, resume=True))


def test_nonfinite_weights_stop_training_before_they_are_saved(tmp_path):
    """Finite losses but a NaN BatchNorm running variance (what an overflow leaves): the save
    raises a TrainingError naming the tensor and keeps the last finite _last.weights."""
    from darknet_kd.errors import TrainingError

    data = make_rect_dataset(tmp_path / "ds", n=4, valid=False)
    cfg = tiny_cfg(tmp_path)

    class Overflows(Trainer):
        def after_update(self):
            if self.iteration == 4:  # after the save at iteration 3
                name, buf = next((n, b) for n, b in self.model.named_buffers() if n.endswith("running_var"))
                buf[0] = float("inf")
                self.bad = name

    t = Overflows(data, cfg, None, _opts(max_batches=9))
    with pytest.raises(TrainingError, match=r"running_var is NaN or infinite at iteration 6"):
        t.run()
    m = Darknet.from_cfg(cfg)
    m.load_weights(tmp_path / "ds" / "backup" / "tiny_last.weights")
    assert m.seen == 3 * 4  # still iteration 3's weights
    assert all(torch.isfinite(b).all() for b in m.buffers())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = r"""
import os, sys, hashlib, torch
sys.path.insert(0, sys.argv[4])
from darknet_kd.train.trainer import Trainer, TrainOptions, shutdown_distributed
t = Trainer(sys.argv[1], sys.argv[2], None, TrainOptions(workers=0, progress=False, max_batches=4,
            backup=sys.argv[3], save_every=100, deterministic=True, threads=1))
t.run()
h = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in t.model.state_dict().values())).hexdigest()
open(os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.sha"), "w").write(h)
shutdown_distributed()
"""


def test_ddp_two_cpu_processes_keep_equal_weights(tmp_path):
    data = make_rect_dataset(tmp_path / "ds", n=8, valid=False)
    cfg = tiny_cfg(tmp_path)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(data), str(cfg), str(out), os.path.dirname(__file__)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    h0, h1 = (out / "rank0.sha").read_text(), (out / "rank1.sha").read_text()
    assert h0 == h1
    assert (out / "tiny_final.weights").exists()
    m = Darknet.from_cfg(cfg)
    m.load_weights(out / "tiny_final.weights")
    assert m.seen == 4 * 4 * 2  # both ranks' images count, as Darknet's ngpus


def test_a_diverged_loss_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    """A NaN loss stops training with a TrainingError naming the cfg and iteration; the CLI prints
    it as one line and exits non-zero."""
    from darknet_kd.cli import main
    from darknet_kd.errors import TrainingError

    data = make_rect_dataset(tmp_path / "ds", n=4, valid=False)
    cfg = tiny_cfg(tmp_path)

    class Diverges(Trainer):
        def compute_loss(self, images, targets, infos):
            loss, parts = super().compute_loss(images, targets, infos)
            return loss * float("nan") if self.iteration == 2 else loss, parts

    with pytest.raises(TrainingError, match=r"tiny\.cfg: loss is nan at iteration 2"):
        Diverges(data, cfg, None, _opts(max_batches=4)).run()
    # the CLI path: learning rate absurd enough to diverge in a few steps
    (tmp_path / "bad").mkdir()
    bad = tiny_cfg(tmp_path / "bad", learning_rate="1e12", burn_in="0")
    rc = main(["train", str(data), str(bad), "--max-batches", "6", "--workers", "0", "--quiet",
               "--backup", str(tmp_path / "b2")])
    err = capsys.readouterr().err
    assert rc != 0 and "loss is" in err and "Traceback" not in err
