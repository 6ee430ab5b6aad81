"""scripts/kd_table.py presets → experiment INI files the pipeline reads (the demo preset's extra keys)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from darknet_kd.pipeline import Experiment, Pipeline

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("kd_table", ROOT / "scripts" / "kd_table.py")
kd_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kd_table)


def _pipeline(tmp_path, preset, rows):
    ini = tmp_path / f"{preset}.ini"
    ini.write_text(kd_table.experiment_text(kd_table.PRESETS[preset], 3, tmp_path / "work", 1, rows))
    return Pipeline(Experiment.read(ini), progress=False)


def test_demo_preset_sets_size_bf16_gan_args_and_teacher(tmp_path):
    demo = kd_table.PRESETS["demo"]
    p = _pipeline(tmp_path, "demo", demo["rows"].split(","))
    assert (p.size, p.bf16, p.seed, p.threads) == (128, True, 3, 1)
    assert p.rows == ["lower", "upper", "proposed"] and p.proposed_kd == "crosskd"
    assert p.exp.get("gan", "args") == "--iter-size 1 --crop 64 --crop-delta 16"
    assert p.exp.number("gan", "detector_iters", 0) == 300 and p.exp.get("gan", "detector", "source") == "source"
    assert p.exp.path_of("teacher", "cfg").name == demo["teacher_cfg"]
    assert p.exp.number("student", "max_batches", 0) == demo["student"]
    # the cfgs are trained at the preset's size, anchors scaled (the shipped cfgs are 256x256)
    student = p.cfg("student", None).read_text()
    assert "width=128" in student and "anchors=3,4, 7,8, 12,18, 25,25, 42,52, 106,98" in student


def test_other_presets_keep_their_files(tmp_path):
    for name in ("smoke", "cpu", "gpu"):
        text = kd_table.experiment_text(kd_table.PRESETS[name], 0, tmp_path, 2, ["lower"])
        assert "size =" not in text and "args =" not in text and "detector" not in text
        assert ("bf16 = yes" in text) == (name == "cpu")
        teacher = "yolov4-tiny-3l-teacher-drivesim.cfg" if name == "gpu" else "yolov4-tiny-drivesim.cfg"
        assert f"cfg = {kd_table.ROOT / 'cfg' / teacher}\nmax_batches" in text and "proposed_kd = auto" in text
        assert ("kd_weight.ld = 0.1\n" in text) == (name == "cpu")
        p = _pipeline(tmp_path, name, ["lower"])
        assert (p.size, p.bf16) == (0, name == "cpu")
        assert p.exp.number("student", "kd_weight.ld", 1.0, float) == (0.1 if name == "cpu" else 1.0)


def test_fp32_flag_overrides_the_presets_bf16(tmp_path):
    assert kd_table.preset_settings("cpu")["bf16"] is True
    settings = kd_table.preset_settings("cpu", fp32=True)
    assert settings["bf16"] is False and kd_table.PRESETS["cpu"]["bf16"] is True    # the preset is not changed
    assert "bf16" not in kd_table.experiment_text(settings, 0, tmp_path, 2, ["lower"])
