"""`darknet-kd pipeline` (darknet_kd/pipeline.py): stages, rows, resume, table, errors."""
from __future__ import annotations

import json

import pytest
import torch

from darknet_kd import cli
from darknet_kd.data.darknet import read_list, write_list
from darknet_kd.errors import DarknetKDError
from darknet_kd.model import Darknet
from darknet_kd.pipeline import Experiment, Pipeline, format_markdown, gap_recovered

from synthetic import TINY_CFG, make_rect_dataset, tiny_cfg


def _experiment(tmp_path, rows="lower, upper, fitnet, pseudo_only, proposed, kd_only", extra=""):
    src = make_rect_dataset(tmp_path / "src", n=6, seed=1)
    make_rect_dataset(tmp_path / "tgt", n=6, seed=2)
    tgt_imgs = sorted((tmp_path / "tgt" / "images").glob("*.png"))
    write_list(tmp_path / "labelled.txt", tgt_imgs[:2])
    write_list(tmp_path / "unlabelled.txt", tgt_imgs[2:])
    s_cfg = tiny_cfg(tmp_path, max_batches=2)
    t_cfg = tmp_path / "teacher.cfg"
    t_cfg.write_text(TINY_CFG.replace("filters=32", "filters=48"))
    torch.manual_seed(0)
    Darknet.from_cfg(t_cfg).save_weights(tmp_path / "teacher.weights")
    ini = tmp_path / "exp.ini"
    ini.write_text(f"""[experiment]
work = work
seed = 0
threads = 1
workers = 0
[data]
drivesim = none
source = {src}
source_train = src/train.txt
source_test = src/valid.txt
labelled = labelled.txt
unlabelled = unlabelled.txt
unlabelled_truth = unlabelled.txt   ; the rectangles keep their labels beside them
target_val = tgt/valid.txt
target_test = tgt/valid.txt
[gan]
enabled = no
[teacher]
cfg = teacher.cfg
weights = teacher.weights
[student]
cfg = {s_cfg}
max_batches = 2
rows = {rows}
proposed_kd = auto
{extra}
""")
    return ini


def test_pipeline_runs_rows_and_resumes_without_work(tmp_path, capsys):
    torch.set_num_threads(1)
    ini = _experiment(tmp_path, rows="lower, upper, fitnet, pseudo_only, kd_only",
                      extra="kd_weight.fitnet = 0.5")
    res = Pipeline(Experiment.read(ini), progress=False).run()
    work = tmp_path / "work"
    assert res["ran"][0] == "pseudo"
    trained = [s for s in res["ran"] if s.startswith("train:")]
    assert trained == ["train:lower", "train:upper", "train:fitnet", "train:pseudo_only", "train:kd_only"]
    rows = res["table"]["rows"]
    assert rows["fitnet"]["kd"] == "fitnet" and rows["kd_only"]["kd"] == "fitnet"   # auto: the only KD row
    assert rows["pseudo_only"]["data"] == "S+T+P" and rows["lower"]["kd"] == "none"
    for r in rows.values():
        assert set(r) >= {"source", "target", "all", "val"} and all(0 <= r[k] <= 1 for k in ("source", "all"))
    # the pseudo-label stage wrote its audit and the training lists hold what each row says
    audit = json.loads((work / "pseudo_audit.json").read_text())
    assert audit["audit"]["images"] == 4 and 0 < audit["threshold"]["thresh"] < 1
    pl_list = (work / "lists" / "pseudo_only.txt").read_text().split()
    assert len(pl_list) == 6 + 2 + 4
    assert len((work / "lists" / "lower.txt").read_text().split()) == 8
    assert len((work / "lists" / "upper.txt").read_text().split()) == 6 + 2 + 4
    summary = json.loads((work / "stages" / "train-fitnet.json").read_text())
    assert summary["kd"] == "fitnet" and summary["summary"]["iterations"] == 2
    md = (work / "table.md").read_text()
    assert "| FitNets |" in md and "ablation: KD only" in md and "darknet-kd pipeline" in md
    # a second run with every output present does no work
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*.weights")}
    again = Pipeline(Experiment.read(ini), progress=False).run()
    assert again["ran"] == []
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.weights")} == before
    assert again["table"]["rows"] == rows
    # a lost output (here: one student's weights) re-runs that stage only
    (work / "students" / "lower" / "tiny_final.weights").unlink()
    third = Pipeline(Experiment.read(ini), progress=False).run()
    assert third["ran"] == ["train:lower", "eval:lower"] or third["ran"] == ["train:lower"]


def test_baseline_rows_do_not_wait_for_teacher(tmp_path):
    """Rows that need neither teacher nor GAN (lower, upper) train no teacher, so a call with
    rows = lower, upper can run beside the one that trains it; a KD row in the same file does."""
    torch.set_num_threads(1)
    ini = _experiment(tmp_path, rows="lower, upper")
    ini.write_text(ini.read_text().replace("weights = teacher.weights\n", "max_batches = 2\n"))
    res = Pipeline(Experiment.read(ini), progress=False).run()
    assert [s for s in res["ran"] if s.startswith("train:")] == ["train:lower", "train:upper"]
    assert "teacher" not in res["table"]["rows"] and not (tmp_path / "work" / "teacher").exists()
    ini.write_text(ini.read_text().replace("rows = lower, upper", "rows = lower, upper, fitnet"))
    res = Pipeline(Experiment.read(ini), progress=False).run()
    assert [s for s in res["ran"] if s.startswith("train:")] == ["train:teacher", "train:fitnet"]
    assert set(res["table"]["rows"]) == {"teacher", "lower", "upper", "fitnet"}


def test_pipeline_cli_and_errors(tmp_path, capsys):
    ini = _experiment(tmp_path, rows="lower")
    assert cli.main(["pipeline", str(ini), "--quiet"]) == 0
    assert "table:" in capsys.readouterr().out
    bad = tmp_path / "bad.ini"
    bad.write_text(ini.read_text().replace("rows = lower", "rows = lower, magic"))
    with pytest.raises(DarknetKDError, match=r"bad.ini:\d+: unknown rows \['magic'\]"):
        Experiment.read(bad) and Pipeline(Experiment.read(bad))
    bad.write_text(ini.read_text() + "colour = blue\n")
    with pytest.raises(DarknetKDError, match="unknown key 'colour'"):
        Experiment.read(bad)
    bad.write_text(ini.read_text().replace("rows = lower", "rows = lower, proposed"))
    with pytest.raises(DarknetKDError, match="needs at least one of the KD rows|needs the GAN"):
        Pipeline(Experiment.read(bad), progress=False).run()
    bad.write_text(ini.read_text().replace("labelled = labelled.txt", "labelled = nowhere.txt"))
    with pytest.raises(DarknetKDError, match="nowhere.txt: no such file"):
        Pipeline(Experiment.read(bad), progress=False).run()


def test_pipeline_size_and_bf16(tmp_path):
    """[experiment] size rewrites both cfgs into WORK/cfg (anchors scaled) and every model trains and is
    evaluated at that size; bf16 reaches the trainer; bad values name the line."""
    torch.set_num_threads(1)
    ini = _experiment(tmp_path, rows="lower, pseudo_only")
    ini.write_text(ini.read_text().replace("workers = 0", "workers = 0\nsize = 64\nbf16 = yes"))
    res = Pipeline(Experiment.read(ini), progress=False).run()
    work = tmp_path / "work"
    student = (work / "cfg" / "tiny.cfg").read_text()
    assert "width=64" in student and "height=64" in student and "width=96" not in student
    assert "anchors=8,8, 13,20, 20,13" in student                       # 12,12, 20,30, 30,20 x 64/96
    assert "width=64" in (work / "cfg" / "teacher.cfg").read_text()
    ckpt = torch.load(work / "students" / "lower" / "tiny_last.ckpt", weights_only=True)
    assert ckpt["options"]["bf16"] is True
    assert res["table"]["rows"]["lower"]["kd"] == "none"
    for line, err in (("size = 100", r"exp.ini:6: size = 100: a positive multiple of 32"),
                      ("bf16 = maybe", r"exp.ini:6: bf16 = 'maybe': yes or no")):
        ini.write_text(ini.read_text().replace("size = 64\nbf16 = yes", line))
        with pytest.raises(DarknetKDError, match=err):
            Pipeline(Experiment.read(ini), progress=False)
        ini.write_text(ini.read_text().replace(line, "size = 64\nbf16 = yes"))


def test_gap_and_markdown():
    assert gap_recovered(60.2, 51.8, 62.8) == pytest.approx(0.7636, abs=1e-4)   # the paper's 76 %
    rows = {"lower": {"source": [0.4, 0.5], "target": [0.5, 0.6], "all": [0.45, 0.55], "val": [0.5, 0.6]},
            "upper": {"source": [0.6, 0.6], "target": [0.8, 0.8], "all": [0.7, 0.7], "val": [0.8, 0.8]},
            "crosskd": {"source": [0.5, 0.5], "target": [0.7, 0.7], "all": [0.6, 0.6], "val": [0.7, 0.7]}}
    md = format_markdown(rows, "2 seeds")
    assert "| Lower baseline (labelled target share) | 45.0 ± 7.1 | 55.0 ± 7.1 | 50.0 ± 7.1 |" in md
    assert "| CrossKD | 50.0 ± 0.0 | 70.0 ± 0.0 | 60.0 ± 0.0 | 70.0 ± 0.0 | 50 % | 60 % |" in md


def test_gap_recovered_is_not_a_share_of_a_missing_gap():
    # the demo's seed: upper 3.4 < lower 3.6 on target; a share of a negative gap would read 854 %
    assert gap_recovered(0.018, 0.036, 0.034) is None
    assert gap_recovered(0.040, 0.036, 0.039) is None          # 0.3 point: below the 0.5-point floor
    assert gap_recovered(0.050, 0.030, 0.040) == pytest.approx(2.0)
    rows = {"lower": {s: [0.036] for s in ("source", "target", "all", "val")},
            "upper": {s: [0.034] for s in ("source", "target", "all", "val")},
            "proposed": {s: [0.018] for s in ("source", "target", "all", "val")}}
    md = format_markdown(rows, "seed 0")
    assert "| GAN + KD (proposed) | 1.8 | 1.8 | 1.8 | 1.8 | n/a (upper ≤ lower) | n/a (upper ≤ lower) |" in md


def test_gan_projector_detector(tmp_path):
    """[gan] detector: `source` (default) trains the student cfg on the source training images
    first (stage train:source, [gan] detector_iters) and hands that model to the GAN's projected
    discriminator; `random` asks for a random frozen backbone; a .weights path is passed on with
    detector_cfg; a missing file names the line."""
    torch.set_num_threads(1)
    ini = _experiment(tmp_path, rows="lower")
    text = ini.read_text().replace("enabled = no", "enabled = yes\ndetector_iters = 1")
    ini.write_text(text)
    pipe = Pipeline(Experiment.read(ini), progress=False)
    ds = pipe.dataset()
    args = pipe.gan_detector(ds)
    work = tmp_path / "work"
    weights = work / "source" / "tiny_final.weights"
    assert args == ["--detector-cfg", str(tmp_path / "tiny.cfg"), "--detector-weights", str(weights)]
    assert weights.exists() and pipe.ran == ["train:source"]
    stage = json.loads((work / "stages" / "train-source.json").read_text())
    assert stage["summary"]["iterations"] == 1 and stage["data"].endswith("source.data")
    src = [str(tmp_path / "src" / p) for p in (tmp_path / "src" / "train.txt").read_text().split()]
    assert (work / "lists" / "source.txt").read_text().split() == src   # source images only
    ini.write_text(text.replace("detector_iters = 1", "detector = random"))
    assert Pipeline(Experiment.read(ini), progress=False).gan_detector(ds) == ["--detector-weights", "random"]
    ini.write_text(text.replace("detector_iters = 1", f"detector = {weights}\ndetector_cfg = teacher.cfg"))
    assert Pipeline(Experiment.read(ini), progress=False).gan_detector(ds) == [
        "--detector-cfg", str(tmp_path / "teacher.cfg"), "--detector-weights", str(weights)]
    ini.write_text(text.replace("detector_iters = 1", "detector = nowhere.weights"))
    with pytest.raises(DarknetKDError, match=r"exp.ini:\d+: detector = nowhere.weights: no such .weights file"):
        Pipeline(Experiment.read(ini), progress=False).gan_detector(ds)


def test_teacher_translated_flag(tmp_path):
    """[teacher] translated = yes (default) trains the teacher on S + G + T; no: on S + T only,
    and then a KD row needs no GAN at all."""
    torch.set_num_threads(1)
    ini = _experiment(tmp_path, rows="fitnet")
    text = ini.read_text().replace("weights = teacher.weights\n", "max_batches = 1\n")
    ini.write_text(text)
    fake_g = tmp_path / "translated.txt"
    write_list(fake_g, sorted((tmp_path / "src" / "images").glob("*.png"))[:3])
    pipe = Pipeline(Experiment.read(ini), progress=False)
    ds = pipe.dataset()
    pipe.teacher(ds, fake_g)
    n_s, n_t = len(read_list(ds["source_train"])), len(read_list(ds["labelled"]))
    teacher_list = tmp_path / "work" / "lists" / "teacher.txt"
    assert len(teacher_list.read_text().split()) == n_s + 3 + n_t
    ini.write_text(text.replace("max_batches = 1\n", "max_batches = 1\ntranslated = no\n")
                   .replace("work = work", "work = work2").replace("enabled = no", "enabled = yes"))
    res = Pipeline(Experiment.read(ini), progress=False).run()   # the GAN is enabled but not needed
    assert "gan" not in res["ran"] and "train:teacher" in res["ran"]
    assert len((tmp_path / "work2" / "lists" / "teacher.txt").read_text().split()) == n_s + n_t
    ini.write_text(text.replace("max_batches = 1\n", "translated = maybe\n"))
    with pytest.raises(DarknetKDError, match=r"exp.ini:\d+: translated = 'maybe': yes or no"):
        Pipeline(Experiment.read(ini), progress=False)
    ini.write_text(text.replace("enabled = no", "enabled = nope"))   # a typo must not switch the GAN off
    with pytest.raises(DarknetKDError, match=r"exp.ini:\d+: enabled = 'nope': yes or no"):
        Pipeline(Experiment.read(ini), progress=False)
