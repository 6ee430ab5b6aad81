"""scripts/gan_downstream.py: the gap share and the table, on hand-made mAPs (no training)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gan_downstream", ROOT / "scripts" / "gan_downstream.py")
gd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gd)

META = {"command": "python scripts/gan_downstream.py --preset cpu", "preset": "cpu", "target": "night",
        "cfg": "yolov4-tiny-drivesim.cfg", "iterations": 500, "target_data": "night-target.data", "gan": "x"}


def test_gap_closed():
    assert gd.gap_closed(0.20, 0.35, 0.50) == pytest.approx(50.0)
    assert gd.gap_closed(0.20, 0.50, 0.50) == pytest.approx(100.0)
    assert gd.gap_closed(0.20, 0.20, 0.50) == pytest.approx(0.0)
    assert gd.gap_closed(0.20, 0.10, 0.40) == pytest.approx(-50.0)   # worse than source-only
    assert gd.gap_closed(0.20, 0.60, 0.40) == pytest.approx(200.0)   # better than the reference
    assert gd.gap_closed(0.30, 0.40, 0.30) is None                   # no gap to close
    assert gd.gap_closed(0.30, 0.40, 0.25) is None                   # reference below source-only
    assert gd.gap_closed(0.3000, 0.31, 0.3005) is None               # gap under min_gap (0.1 point)


def test_table_and_markdown():
    maps = {"source-only": {"target": 0.12, "source": 0.61}, "translated": {"target": 0.33, "source": 0.55},
            "target-trained": {"target": 0.54, "source": 0.30}}
    t = gd.make_table(maps, META)
    assert t["gap_points"] == pytest.approx(42.0)
    assert t["gap_closed_percent"] == pytest.approx(50.0)
    assert t["rows"]["translated"] == {"target": 0.33, "source": 0.55}
    assert json.loads(json.dumps(t)) == t  # JSON-ready
    md = gd.format_markdown(t)
    assert md.startswith("`python scripts/gan_downstream.py --preset cpu`")
    assert "| source-only (source labels) | 12.0 | 61.0 |" in md
    assert "| translated (translated source) | 33.0 | 55.0 |" in md
    assert "| target-trained (night-target.data) | 54.0 | 30.0 |" in md
    assert "+42.0 points" in md and "**50 %**" in md


def test_table_without_gap_and_missing_row():
    maps = {m: {"target": 0.0, "source": 0.0} for m in gd.MODELS}
    t = gd.make_table(maps, META)
    assert t["gap_closed_percent"] is None and "n/a" in gd.format_markdown(t)
    del maps["translated"]
    with pytest.raises(ValueError, match="translated"):
        gd.make_table(maps, META)
