"""`darknet-kd distill` (darknet_kd/train/distill.py), the shipped teacher cfg, and the
pseudo-label threshold sweep / audit (darknet_kd/train/pseudo.py)."""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from darknet_kd import cli
from darknet_kd.data.darknet import label_path, read_labels, read_list, write_labels
from darknet_kd.errors import CheckpointError, DarknetKDError
from darknet_kd.model import Darknet
from darknet_kd.train.distill import Distiller, crosskd_levels, default_hooks, ld_levels, pair_hooks
from darknet_kd.train.pseudo import audit, labels_at, match_counts, sweep_threshold
from darknet_kd.train.trainer import TrainOptions

from conftest import CFG_DIR
from synthetic import TINY_CFG, make_rect_dataset, tiny_cfg

STUDENT = CFG_DIR / "yolov4-tiny-drivesim.cfg"
TEACHER = CFG_DIR / "yolov4-tiny-3l-teacher-drivesim.cfg"


def test_shipped_teacher_and_student_pair_up():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, t = Darknet.from_cfg(STUDENT), Darknet.from_cfg(TEACHER)
    assert default_hooks(s) == [28, 35] and default_hooks(t) == [28, 35, 42]
    assert pair_hooks(s, t) == ([28, 35], [28, 35])
    assert [t.layers[i].out_shape.c for i in (28, 35, 42)] == [768, 384, 192]
    assert sum(p.numel() for p in t.parameters()) > 2 * sum(p.numel() for p in s.parameters())
    levels = ld_levels(s, t, [28, 35], [28, 35])
    assert [(lv["s_head"], lv["t_head"]) for lv in levels] == [(0, 0), (1, 1)]
    chains = crosskd_levels(t, [28, 35])
    assert [[m.index for m in lv["chain"]] for lv in chains] == [[29], [36]]
    with pytest.raises(DarknetKDError, match="same stride"):
        pair_hooks(s, t, [28], [35])
    with pytest.raises(DarknetKDError, match="outside layers"):
        pair_hooks(s, t, [99])


def test_teacher_cfg_loads_in_opencv():
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromDarknet(str(TEACHER))
    assert len(net.getUnconnectedOutLayers()) == 3


def _setup(tmp_path, n=8):
    data = make_rect_dataset(tmp_path / "ds", n=n)
    s_cfg = tiny_cfg(tmp_path)
    t_cfg = tmp_path / "teacher.cfg"
    t_cfg.write_text(TINY_CFG.replace("filters=32", "filters=48"))
    torch.manual_seed(3)
    Darknet.from_cfg(t_cfg).save_weights(tmp_path / "teacher.weights")
    return data, s_cfg, t_cfg, tmp_path / "teacher.weights"


def _opts(tmp_path, name, **kw):
    base = dict(backup=str(tmp_path / name), workers=0, progress=False, save_every=1000, map_every=1000,
                chart=False, seed=1, deterministic=True)
    base.update(kw)
    return TrainOptions(**base)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_distillation_lowers_kd_loss_and_leaves_teacher_unchanged(tmp_path):
    torch.set_num_threads(1)
    data, s_cfg, t_cfg, t_w = _setup(tmp_path)
    before_file = _sha(t_w)
    d = Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "b", max_batches=25), kd="crosskd", kd_weight=20.0)
    teacher_state = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    images, targets, infos = next(iter(d.make_loader()))

    def kd_on_batch():
        with torch.no_grad():
            return d.compute_loss(images, targets, infos)[1]["kd"].item()

    start = kd_on_batch()
    d.run()
    end = kd_on_batch()
    assert end < 0.7 * start, (start, end)
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k
    assert not d.teacher.training
    assert _sha(t_w) == before_file
    # the exported student is a plain Darknet network: same file as the student cfg writes
    out = tmp_path / "b" / "tiny_final.weights"
    plain = Darknet.from_cfg(s_cfg)
    assert plain.load_weights(out) == len(plain.layers)
    plain.save_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == out.read_bytes()


@pytest.mark.parametrize("kd", ["fitnet", "fgd", "ld"])
def test_each_method_trains_and_reports_its_parts(tmp_path, kd):
    torch.set_num_threads(1)
    data, s_cfg, t_cfg, t_w = _setup(tmp_path, n=4)
    d = Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "b", max_batches=2), kd=kd, ld_teacher_iters=2)
    images, targets, infos = next(iter(d.make_loader()))
    loss, parts = d.compute_loss(images, targets, infos)
    names = {"fitnet": {"kd_hint"}, "fgd": {"kd_fg", "kd_bg", "kd_mask", "kd_global"},
             "ld": {"kd_ld", "kd_cls_kd", "kd_dfl"}}[kd]
    assert names <= set(parts) and parts["kd"].item() > 0
    assert loss.item() == pytest.approx(parts["total"].item() + parts["kd"].item(), rel=1e-5)
    n_groups = len(d.optimizer.param_groups)
    assert n_groups > 2                                          # the KD modules' parameters are trained too
    summary = d.run()
    assert summary["kd"] == kd and summary["iterations"] == 2
    if kd == "ld":
        assert d.ld_fitted


def test_resume_and_mismatched_settings(tmp_path):
    torch.set_num_threads(1)
    data, s_cfg, t_cfg, t_w = _setup(tmp_path, n=4)
    Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "b", max_batches=3, save_every=3), kd="fgd").run()
    d = Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "b", max_batches=5, resume=True), kd="fgd")
    assert d.iteration == 3
    assert d.run()["iterations"] == 5
    with pytest.raises(CheckpointError, match="other distillation settings"):
        Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "b", max_batches=8, resume=True), kd="fgd",
                  kd_weight=2.0)


def test_bad_inputs_are_clear_errors(tmp_path):
    data, s_cfg, t_cfg, t_w = _setup(tmp_path, n=4)
    three = tmp_path / "three.cfg"
    three.write_text(TINY_CFG.replace("classes=2", "classes=3").replace("filters=21", "filters=24"))
    Darknet.from_cfg(three).save_weights(tmp_path / "three.weights")
    with pytest.raises(DarknetKDError, match="classes=3"):
        Distiller(data, s_cfg, three, tmp_path / "three.weights", opts=_opts(tmp_path, "x", max_batches=1))
    with pytest.raises(DarknetKDError, match="is a \\[yolo\\] layer"):
        Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "x", max_batches=1), student_layers=[7])
    with pytest.raises(DarknetKDError, match="not one of"):
        Distiller(data, s_cfg, t_cfg, t_w, opts=_opts(tmp_path, "x", max_batches=1), kd="dark")


def test_cli_distill(tmp_path, capsys):
    data, s_cfg, t_cfg, t_w = _setup(tmp_path, n=4)
    rc = cli.main(["distill", str(data), str(s_cfg), str(t_cfg), str(t_w), "--kd", "crosskd", "--kd-weight", "0.5",
                   "--max-batches", "1", "--workers", "0", "--quiet", "--backup", str(tmp_path / "c"),
                   "--student-layers", "5", "--teacher-layers", "5"])
    assert rc == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n"):])["kd"] == "crosskd"
    assert (tmp_path / "c" / "tiny_final.weights").exists()
    rc = cli.main(["distill", str(data), str(s_cfg), str(t_cfg), str(t_w), "--student-layers", "5,x"])
    assert rc == 2


# ------------------------------------------------------------------------------------ pseudo-labels
def test_match_counts_hand_case():
    truth = np.array([[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.2, 0.1, 0.1], [0, 0.8, 0.8, 0.1, 0.1]])
    pred = np.array([[0, 0.5, 0.5, 0.2, 0.2],        # TP
                     [0, 0.51, 0.5, 0.2, 0.2],       # same truth again: FP
                     [0, 0.2, 0.2, 0.1, 0.1],        # right place, wrong class: FP
                     [0, 0.82, 0.8, 0.1, 0.1]])      # IoU 0.67 with the third truth: TP
    assert match_counts(pred, truth) == (2, 2, 1)
    assert match_counts(pred[:0], truth) == (0, 0, 3)
    assert match_counts(pred, truth[:0]) == (0, 4, 0)


def test_threshold_sweep_and_audit(tmp_path):
    from darknet_kd.detect import pseudo_label
    from darknet_kd.model import load

    torch.set_num_threads(1)
    data, s_cfg, _, _ = _setup(tmp_path, n=6)
    Distiller(data, s_cfg, None, None, opts=_opts(tmp_path, "t", max_batches=30), kd="none").run()
    model = load(s_cfg, tmp_path / "t" / "tiny_final.weights")
    images = read_list(tmp_path / "ds" / "valid.txt")
    truths = [read_labels(label_path(p)) for p in images]
    res = sweep_threshold(model, images, truths, thresholds=[0.05, 0.1, 0.2, 0.4, 0.6], progress=False)
    table = res["table"]
    best = max(table, key=lambda r: r["f1"])
    assert res["thresh"] == best["thresh"]
    recalls = [r["recall"] for r in table]
    assert recalls == sorted(recalls, reverse=True)           # a higher threshold never finds more
    n_truth = sum(len(t) for t in truths)
    assert all(r["tp"] + r["fn"] == n_truth for r in table)
    # the audit of the written pseudo-labels agrees with the sweep at the same threshold
    out = tmp_path / "pseudo"
    pseudo_label(model, images, out, res["thresh"], progress=False)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    truth_files = []
    for p, t in zip(images, truths):
        truth_files.append(hidden / f"{p.stem}.txt")
        write_labels(truth_files[-1], t)
    a = audit(out, truth_files)
    row = next(r for r in table if r["thresh"] == res["thresh"])
    assert (a["tp"], a["fp"], a["fn"]) == (row["tp"], row["fp"], row["fn"])
    assert a["images"] == len(images)
    with pytest.raises(DarknetKDError, match="hidden label files"):
        audit(out, truth_files[:-1])
    with pytest.raises(DarknetKDError, match="does not correspond"):
        audit(out, truth_files[::-1])


def test_labels_at_keeps_one_label_per_box():
    from darknet_kd.detect import Detection

    dets = [Detection(1, "b", 0.9, (0.5, 0.5, 0.2, 0.2), 0), Detection(0, "a", 0.6, (0.5, 0.5, 0.2, 0.2), 0),
            Detection(0, "a", 0.3, (0.1, 0.1, 0.1, 0.1), 1)]
    assert np.allclose(labels_at(dets, 0.5), [[1, 0.5, 0.5, 0.2, 0.2]])
    assert labels_at(dets, 0.2)[:, 0].tolist() == [1, 0]
    # a box over the image edge is clipped edge by edge (label files must stay inside [0, 1])
    edge = [Detection(0, "a", 0.9, (0.95, 0.1, 0.2, 0.4), 0)]
    assert np.allclose(labels_at(edge, 0.5), [[0, 0.925, 0.15, 0.15, 0.3]])
