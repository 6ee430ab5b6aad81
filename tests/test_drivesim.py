"""DriveSim: determinism, label validity, exact visible boxes, paired domains, hidden labels."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknet_kd.cli import main
from darknet_kd.data.check import check_dataset
from darknet_kd.data.darknet import label_path, read_data_file, read_labels, read_list, read_names
from darknet_kd.data.drivesim import (CLASSES, DOMAINS, MIN_VISIBLE, PRESETS, generate, make_scene, rasterize,
                                      render_scene, scene_labels, split_code)
from darknet_kd.data.drivesim.scene import sample_scene
from darknet_kd.errors import DataError


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke experiment with two target domains (2 workers), shared by the tests."""
    out = tmp_path_factory.mktemp("ds") / "exp"
    m = generate(out, "smoke", seed=5, targets=["night", "fog"], workers=2, progress=False)
    return out, m


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_any_worker_count(smoke, tmp_path):
    out, _ = smoke
    again = tmp_path / "again"
    generate(again, "smoke", seed=5, targets=["night", "fog"], workers=1, progress=False)
    a, b = _tree(out), _tree(again)
    assert a.keys() == b.keys()
    assert len(a) > 300
    different = [k for k in a if a[k] != b[k]]
    assert not different, different[:5]
    other = tmp_path / "other"
    generate(other, "smoke", seed=6, targets=["night", "fog"], workers=2, progress=False)
    c = _tree(other)
    assert c.keys() == a.keys()
    changed = sum(a[k] != c[k] for k in a if k.endswith(".jpg"))
    assert changed == sum(k.endswith(".jpg") for k in a)      # another seed: every image differs


def test_every_data_file_passes_check(smoke):
    out, m = smoke
    datas = sorted(out.glob("*.data"))
    assert {p.stem for p in datas} == set(m["data_files"])
    assert {"source", "source-test", "night-lower", "night-upper", "night-target", "night-test", "night-sfod",
            "fog-lower", "fog-upper", "fog-target", "fog-test", "paired-night-test", "paired-fog-test",
            "paired-rain-test"} <= {p.stem for p in datas}
    for d in datas:
        errors, stats = check_dataset(d, decode=True, out=io.StringIO())
        assert errors == [], (d, errors[:3])
        assert stats["train"].images > 0 and stats["valid"].images > 0
    assert read_names(out / "drivesim.names") == list(CLASSES)


def test_data_files_point_at_the_right_splits(smoke):
    out, m = smoke
    pre = PRESETS["smoke"]
    n_lab = round(0.2 * pre.target[0])

    def imgs(data, key):
        return [p.resolve() for p in read_data_file(out / data).images(key)]

    src = imgs("source.data", "train")
    assert len(src) == pre.source[0]
    lab, unl = imgs("night-lower.data", "train")[len(src):], imgs("night-sfod.data", "train")
    assert len(lab) == n_lab and len(unl) == pre.target[0] - n_lab
    assert imgs("night-lower.data", "train")[:len(src)] == src
    upper = imgs("night-upper.data", "train")
    assert len(upper) == len(src) + pre.target[0] and upper[:len(src) + n_lab] == src + lab
    assert imgs("night-target.data", "train") == upper[len(src):]
    assert imgs("night-test.data", "valid") == imgs("night-lower.data", "test")
    assert imgs("night-lower.data", "valid") != imgs("night-lower.data", "test")
    assert len(imgs("paired-fog-test.data", "valid")) == pre.source[2]
    assert read_data_file(out / "night-upper.data").extra["test"] == "night-test.txt"
    # the audit copies are the unlabelled images themselves (hard links or copies)
    for u, a in zip(unl, upper[len(src) + n_lab:]):
        assert u.name == a.name and u.read_bytes() == a.read_bytes()
    assert m["lists"]["night-labelled"]["images"] == n_lab


def test_unlabelled_images_have_no_visible_labels(smoke):
    out, m = smoke
    for d in ("night", "fog"):
        unl = read_list(out / f"{d}-unlabelled.txt", anchors=(out,))
        aud = read_list(out / f"{d}-unlabelled-audit.txt", anchors=(out,))
        assert len(unl) == len(aud) > 0
        for u, a in zip(unl, aud):
            assert u.is_file() and not label_path(u).exists()          # Darknet finds nothing
            assert not (u.parent.parent / "labels").exists()
            assert label_path(a).is_file()                             # the hidden labels, kept apart
        hidden = sum(len(read_labels(label_path(a), len(CLASSES))) for a in aud)
        assert hidden == sum(m["lists"][f"{d}-unlabelled"]["hidden_boxes"].values()) > 0
        assert "boxes" not in m["lists"][f"{d}-unlabelled"]


def test_paired_renders_share_boxes(smoke):
    out, _ = smoke
    day = read_list(out / "source-train.txt", anchors=(out,))
    night = read_list(out / "paired-night-train.txt", anchors=(out,))
    assert [p.name for p in day] == [p.name for p in night]
    some_differ = 0
    for a, b in zip(day, night):
        assert label_path(a).read_bytes() == label_path(b).read_bytes()
        some_differ += a.read_bytes() != b.read_bytes()
    assert some_differ == len(day)
    test_day = read_list(out / "source-test.txt", anchors=(out,))
    for d in ("night", "fog", "rain"):
        test_d = read_list(out / f"paired-{d}-test.txt", anchors=(out,))
        assert [label_path(p).read_bytes() for p in test_d] == [label_path(p).read_bytes() for p in test_day]
    # the API: one scene in all domains, identical labels; the day image does not depend on
    # which other domains were rendered
    imgs, labels = render_scene(5, split_code("source", "train"), 3, "source", 128)
    alone, labels2 = render_scene(5, split_code("source", "train"), 3, "source", 128, domains=("day",))
    assert np.array_equal(labels, labels2) and np.array_equal(imgs["day"], alone["day"])
    assert len({imgs[d].tobytes() for d in DOMAINS}) == 4


def test_labels_only_path_matches_render():
    for i in range(6):
        sc = make_scene(1, 1, i, "target" if i % 2 else "source")
        full = rasterize(sc, 160, 160)
        assert np.array_equal(full.labels, rasterize(sc, 160, 160, color=False).labels)
        assert np.array_equal(full.labels, scene_labels(1, 1, i, "target" if i % 2 else "source", 160))


def _lone_scene(things):
    sc = sample_scene(np.random.default_rng(0), "source")
    sc = copy.copy(sc)
    sc.buildings, sc.things = [], things
    return sc


def _car(X, Z, view="rear"):
    rng = np.random.default_rng(1)
    from darknet_kd.data.drivesim.scene import STYLES, _vehicle
    return _vehicle(rng, STYLES["source"], "car", X, Z, view)


def _changed_box(a, b):
    """Bounding box (x0, y0, x1, y1) of the pixels where two albedo layers differ."""
    ys, xs = np.nonzero((a != b).any(-1))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_boxes_are_the_visible_extent():
    W = H = 256
    car = _car(0.3, 12.0)
    empty = rasterize(_lone_scene([]), W, H)
    alone = rasterize(_lone_scene([car]), W, H)
    assert alone.labels.shape == (1, 5) and alone.labels[0, 0] == CLASSES.index("car")
    assert tuple(alone.boxes[0]) == _changed_box(empty.albedo, alone.albedo)
    x0, y0, x1, y1 = alone.boxes[0]
    assert np.allclose(alone.labels[0, 1:], [(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H])
    # a nearer truck hides the car's left part: the car's box shrinks to what is visible
    truck = copy.deepcopy(_car(-1.3, 8.0))
    truck.kind, truck.cls = "truck", CLASSES.index("truck")
    truck.p.update(w=2.4, h=3.5, cab=(200, 200, 200), length=8.0)
    front = rasterize(_lone_scene([truck]), W, H)
    both = rasterize(_lone_scene([car, truck]), W, H)
    car_row = both.labels[both.labels[:, 0] == CLASSES.index("car")]
    assert len(car_row) == 1
    box = both.boxes[list(both.labels[:, 0]).index(CLASSES.index("car"))]
    vis = (both.ids >= 3) & (front.ids < 3)                     # pixels the car owns in the pair
    ys, xs = np.nonzero(vis)
    assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert box[0] > x0 and box[2] == x1                         # cut on the left only
    assert MIN_VISIBLE <= both.visible[list(both.labels[:, 0]).index(CLASSES.index("car"))] < 0.95
    # straight behind the truck: hidden beyond MIN_VISIBLE -> dropped, and counted
    hidden = rasterize(_lone_scene([_car(-1.3, 12.0), truck]), W, H)
    assert list(hidden.labels[:, 0]) == [CLASSES.index("truck")] and hidden.dropped == 1


def test_lit_windows_are_the_visible_windows():
    """The night window layer holds a window's state only where its glass is seen: a nearer
    facade hides a farther building's lit windows (painter's order, reference drawn into a
    separate layer here), objects hide them, and every lit pixel shows window glass by day."""
    from darknet_kd.data.drivesim import render as R
    lit_total = 0
    for i in range(4):
        sc = make_scene(5, 1, i, "source" if i % 2 else "target")
        L = rasterize(sc, 160, 160)
        cam = R.Camera.of(sc, 160, 160)
        blds = sorted((b for b in sc.buildings if b.z1 > R.NEAR), key=lambda b: -b.z0)
        wq, wb, state = R._windows(cam, blds, sc.lit_seed)
        ref = np.zeros((160, 160), np.uint8)
        for k, b in enumerate(blds):
            facade = R._fix(R._facade_quads(cam, b.X, max(b.z0, R.NEAR), b.z1, 0.0, b.h))
            cv2.fillPoly(ref, [facade], 0, cv2.LINE_8, R.SHIFT)
            for s in range(3):
                sel = (wb == k) & (state == s)
                if sel.any():
                    cv2.fillPoly(ref, list(wq[sel]), s, cv2.LINE_8, R.SHIFT)
        ref[L.ids >= R.FIRST_OBJECT] = 0
        assert np.array_equal(L.windows, ref)
        glass = {tuple(b.window) for b in sc.buildings}
        lit = L.windows > 0
        assert all(tuple(p) in glass for p in L.albedo[lit].tolist())
        lit_total += lit.sum()
    assert lit_total > 100


def test_not_a_global_colour_transform():
    """No per-channel function of the day value (a per-image LUT, fitted here) explains
    the night image; fog and rain depend on depth and local effects too."""
    def r2_best_lut(src, dst):
        r = []
        for c in range(3):
            s, d = src[..., c].ravel().astype(np.int64), dst[..., c].ravel().astype(np.float64)
            pred = (np.bincount(s, d, 256) / np.maximum(np.bincount(s, minlength=256), 1))[s]
            r.append(1 - ((d - pred) ** 2).sum() / ((d - d.mean()) ** 2).sum())
        return float(np.mean(r))
    scores = {d: [] for d in DOMAINS[1:]}
    for i in range(4):
        imgs, _ = render_scene(2, 1, i, "source", 128)
        for d in scores:
            scores[d].append(r2_best_lut(imgs["day"], imgs[d]))
    assert np.mean(scores["night"]) < 0.6, scores
    assert np.mean(scores["fog"]) < 0.95 and np.mean(scores["rain"]) < 0.95, scores
    # night is darker than day in every scene
    for i in range(4):
        imgs, _ = render_scene(2, 1, i, "source", 128, domains=("day", "night"))
        assert imgs["night"].mean() < 0.75 * imgs["day"].mean()


def test_every_class_in_the_cpu_preset():
    """The cpu preset's class statistics, from labels computed without rendering images
    (the first scenes of its source and target training splits)."""
    size = PRESETS["cpu"].size
    for block, style in (("source", "source"), ("night", "target")):
        code = split_code(block, "train")
        counts = np.zeros(len(CLASSES), int)
        for i in range(80):
            lab = scene_labels(0, code, i, style, size)
            counts += np.bincount(lab[:, 0].astype(int), minlength=len(CLASSES))
        assert (counts > 0).all(), dict(zip(CLASSES, counts))
        assert counts[CLASSES.index("car")] == counts.max()       # cars dominate, as in BDD100K


def test_cli_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["drivesim", str(out), "--preset", "smoke", "--seed", "1", "--workers", "1", "--size", "96"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["size"] == [96, 96] and m["target_domains"] == ["night"] and m["classes"] == list(CLASSES)
    assert "wrote" in capsys.readouterr().out
    assert cv2.imread(str(next((out / "source" / "train" / "JPEGImages").glob("*.jpg")))).shape == (96, 96, 3)
    # existing experiment without --overwrite; a foreign folder; bad arguments
    assert main(["drivesim", str(out), "--preset", "smoke"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["drivesim", str(foreign), "--preset", "smoke"]) == 2
    assert (foreign / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert main(["drivesim", str(tmp_path / "file"), "--preset", "smoke"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["drivesim", str(tmp_path / "x"), "--target", "day"]) == 2
    assert main(["drivesim", str(tmp_path / "x"), "--target-frac", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(DataError, match="multiple of 32"):
        generate(tmp_path / "y", "smoke", size=100)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # --overwrite replaces the experiment (and leaves no partial folder)
    assert main(["drivesim", str(out), "--preset", "smoke", "--seed", "2", "--workers", "1", "--size", "64",
                 "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    assert not list(tmp_path.glob(".*partial"))


def _draw_ref(img, kind, q, th, color):
    if kind == "P":
        cv2.fillPoly(img, [q], color, cv2.LINE_8, 3)
    elif kind == "M":                                   # one polygon at a time
        for quad in q.reshape(-1, 4, 2):
            cv2.fillPoly(img, [quad], color, cv2.LINE_8, 3)
    elif kind == "L":
        cv2.polylines(img, [q], False, color, th, cv2.LINE_8, 3)
    else:
        cv2.ellipse(img, (int(q[0, 0]), int(q[0, 1])), th[1], 0, 0, 360, color, th[0], cv2.LINE_8, 3)


def _reference_objects(scene, W, H):
    """Reference compositor: every object drawn alone into its own sprite (BGR + mask, and
    its radiance from the first light on), then copied over the layers where its mask is
    set and no nearer building hides it -- what rasterize() paints straight into one canvas."""
    from darknet_kd.data.drivesim import render as R
    cam = R.Camera.of(scene, W, H)
    things = [t for t in scene.things if t.Z > R.NEAR]
    canvas, depth, ids, _, _ = R._background(scene, cam, True, np.uint8 if len(things) < 255 else np.uint16)
    emis = np.zeros((H, W, 3), np.float32)
    albedo = canvas[..., :3].astype(np.uint8)
    layout = R._layout(things, cam)
    facade_l = max((b.X for b in scene.buildings if b.side < 0), default=-np.inf)
    facade_r = min((b.X for b in scene.buildings if b.side > 0), default=np.inf)
    for i in sorted(range(len(things)), key=lambda i: (-things[i].Z, things[i].order)):
        t = things[i]
        _, _, ox, oy, sw, sh, fixed, _, meta = layout[i]
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + sw, W), min(oy + sh, H)
        if x0 >= x1 or y0 >= y1 or sw > 8 * W or sh > 8 * H:
            continue
        spr, spe = np.zeros((sh, sw, 4), np.uint8), np.zeros((sh, sw, 3), np.float32)
        lit = False
        for kind, a, b, th, alb, em in meta:
            _draw_ref(spr, kind, fixed[a:b], th, (*alb, 255))
            lit = lit or em is not None
            if lit:
                _draw_ref(spe, kind, fixed[a:b], th, em or (0.0, 0.0, 0.0))
        reg, sreg = np.s_[y0:y1, x0:x1], np.s_[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        m = spr[sreg][..., 3] > 0
        if not facade_l < t.X < facade_r:
            m &= ~((ids[reg] == 2) & (depth[reg] < t.Z))
        ids[reg][m], depth[reg][m] = 3 + i, np.float32(t.Z)
        albedo[reg][m], emis[reg][m] = spr[sreg][..., :3][m], spe[sreg][m]
    return albedo, ids, depth, emis


@pytest.mark.parametrize("size", [96, 160])
def test_one_canvas_equals_a_sprite_per_object(size):
    """rasterize() paints objects straight into one canvas (ids through an id channel,
    lights through an owner layer); the layers must equal compositing one sprite per object,
    for objects cut by the border, cross traffic behind corner buildings and lights covered
    by nearer objects alike -- and with more than 254 objects (16-bit id channel)."""
    scenes = [make_scene(3, 1, i, "target" if i % 2 else "source") for i in range(5)]
    crowded = copy.deepcopy(scenes[0])
    extra = copy.deepcopy(crowded.things)
    while len(crowded.things) < 300:
        for t in extra:
            t = copy.copy(t)
            t.X, t.Z = t.X + 0.37 * len(crowded.things) % 3 - 1.5, t.Z * 1.13
            crowded.things.append(t)
    for sc in scenes + [crowded]:
        L = rasterize(sc, size, size)
        albedo, ids, depth, emis = _reference_objects(sc, size, size)
        assert (ids >= 3).any() and (emis > 0).any()
        assert np.array_equal(L.ids, ids) and np.array_equal(L.albedo, albedo)
        assert np.array_equal(L.depth, depth) and np.array_equal(L.emis, emis)
    assert ids.max() - 3 >= 255                                    # the crowded scene used the 16-bit ids
