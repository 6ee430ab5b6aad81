"""darknet_kd.cfg.sized_cfg: one cfg resized (the parity check, sfod_table's mini preset, the pipeline)."""
from __future__ import annotations

import pytest

from darknet_kd.cfg import parse_cfg, sized_cfg
from darknet_kd.errors import CfgError
from darknet_kd.model import Darknet

from synthetic import TINY_CFG


def test_sized_cfg_sets_size_and_scales_anchors(tmp_path):
    src = tmp_path / "net.cfg"
    src.write_text(TINY_CFG.replace("width=96", "width = 96   # input").replace("anchors=12,12, 20,30, 30,20",
                                                                            "anchors = 12,12,  20,30,30,20"))
    out = sized_cfg(src, 128, tmp_path / "a")
    assert out == tmp_path / "a" / "net.cfg"
    net = parse_cfg(out).net
    assert (net.get_int("width", 0), net.get_int("height", 0)) == (128, 128)
    assert "anchors = 12,12,  20,30,30,20" in out.read_text()                # kept unless asked
    scaled = sized_cfg(src, 64, tmp_path / "b", scale_anchors=True, name="net-64.cfg")
    assert scaled.name == "net-64.cfg" and "anchors=8,8, 13,20, 20,13" in scaled.read_text()
    m = Darknet.from_cfg(scaled)
    assert (m.net.width, m.net.height) == (64, 64)
    assert [list(a) for a in m.yolo_layers[0].anchors] == [[8, 8], [13, 20], [20, 13]]
    # unchanged text: the file is not rewritten (a running job's cfg keeps its mtime)
    t = scaled.stat().st_mtime_ns
    sized_cfg(src, 64, tmp_path / "b", scale_anchors=True, name="net-64.cfg")
    assert scaled.stat().st_mtime_ns == t
    (tmp_path / "bad.cfg").write_text("[net]\nbatch=1\n[convolutional]\nfilters=1\n")
    with pytest.raises(CfgError, match=r"bad.cfg: no \[net\] width= to resize"):
        sized_cfg(tmp_path / "bad.cfg", 64, tmp_path)
