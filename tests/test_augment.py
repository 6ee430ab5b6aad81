"""Augmentation keeps boxes on their objects: filled rectangles are drawn at the label
positions, each augmentation is applied, and every transformed label must cover its
rectangle (IoU >= 0.9) -- and every visible rectangle must have its label."""
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from darknet_kd.data.darknet import label_path, write_labels
from darknet_kd.data.dataset import (AugmentOptions, DarknetBatchSampler, EvalDataset, TrainDataset, _hsv, _mosaic,
                                     WORKER_CONTEXT, augment, collate, letterbox_size, multiscale_size, to_original_boxes,
                                     worker_init_fn)

BG = (60, 60, 60)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
           (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 255, 255), (128, 255, 0), (255, 0, 128),
           (0, 255, 128), (160, 160, 255), (255, 160, 160), (160, 255, 160)]


def scene(w, h, rects, first_class=0):
    """Image with filled rectangles (pixel x1, y1, x2, y2) and their labels (class = colour)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BG
    labels = []
    for k, (x1, y1, x2, y2) in enumerate(rects):
        c = first_class + k
        img[y1:y2, x1:x2] = COLOURS[c]
        labels.append([c, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
    return img, np.array(labels, np.float32).reshape(-1, 5)


RECTS = [(20, 30, 110, 120), (150, 20, 230, 150), (250, 140, 310, 230), (40, 160, 140, 220)]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    i = ix * iy
    return i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)


def components(img, colour, min_side=8):
    """Pixel boxes of the visible rectangles of one colour (bilinear edges: half threshold)."""
    m = (np.abs(img.astype(np.int32) - np.array(colour)).sum(-1) < 120).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
    return [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:] if w >= min_side and h >= min_side]


def assert_boxes_on_objects(img, boxes, min_side=8, classes=range(len(COLOURS))):
    """Every label of >= min_side px covers a visible rectangle of its colour and every
    visible rectangle of ``classes`` has its label."""
    h, w = img.shape[:2]
    px = [(int(b[0]), ((b[1] - b[3] / 2) * w, (b[2] - b[4] / 2) * h, (b[1] + b[3] / 2) * w, (b[2] + b[4] / 2) * h))
          for b in boxes]
    for c, box in px:
        if box[2] - box[0] < min_side or box[3] - box[1] < min_side:
            continue
        best = max((iou(box, comp) for comp in components(img, COLOURS[c], 2)), default=0)
        assert best >= 0.9, f"label {c} {box} is not on its object (IoU {best:.3f})"
    for c in {int(b[0]) for b in boxes} | set(classes):
        for comp in components(img, COLOURS[c], 12):
            best = max((iou(box, comp) for k, box in px if k == c), default=0)
            assert best >= 0.9, f"visible object {c} {comp} has no label (best IoU {best:.3f})"


@pytest.mark.parametrize("name, opts", [
    ("resize", AugmentOptions()),
    ("jitter", AugmentOptions(jitter=0.3)),
    ("flip", AugmentOptions(flip=True)),
    ("jitter+flip", AugmentOptions(jitter=0.3, flip=True)),
    ("letter_box", AugmentOptions(jitter=0.2, letter_box=True)),
    ("resize=1.5", AugmentOptions(jitter=0.1, resize=1.5)),
    ("hsv", AugmentOptions(jitter=0.2, hue=0.1, saturation=1.5, exposure=1.5)),
])
def test_augmentation_keeps_boxes_on_objects(name, opts):
    img, labels = scene(320, 240, RECTS)
    flipped = 0
    for seed in range(15):
        out, boxes, crop = augment(img, labels, 256, 192, opts, np.random.default_rng(seed))
        assert out.shape == (192, 256, 3) and out.dtype == np.uint8
        assert boxes.dtype == np.float32 and ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()
        if name != "hsv":  # colour shifts move the colours the check looks for
            assert_boxes_on_objects(out, boxes, classes=range(4))
        flipped += crop[4]
    assert (flipped > 3) == opts.flip


def test_hsv_changes_colours_not_boxes():
    img, labels = scene(320, 240, RECTS)
    geo, hsv = AugmentOptions(jitter=0.2), AugmentOptions(jitter=0.2, hue=0.2, saturation=1.5, exposure=1.5)
    changed = 0
    for seed in range(10):
        a, ba, _ = augment(img, labels, 256, 192, geo, np.random.default_rng(seed))
        b, bb, _ = augment(img, labels, 256, 192, hsv, np.random.default_rng(seed))
        np.testing.assert_array_equal(ba, bb)
        changed += not np.array_equal(a, b)
    assert changed >= 9
    # H += 179*dhue on OpenCV's 0..180 hue circle: a third of the circle turns red into green,
    # and blue (hue 120) wraps around to red instead of saturating as Darknet's uint8 += does
    shifted = _hsv(img, 1 / 3, 1.0, 1.0)
    assert tuple(shifted[50, 50]) == (0, 255, 0) and tuple(shifted[200, 280]) == (255, 0, 0)
    # saturation 0 -> grey, exposure 0.5 -> half brightness
    assert tuple(_hsv(img, 0, 0.0, 1.0)[50, 50]) == (255, 255, 255)
    assert tuple(_hsv(img, 0, 1.0, 0.5)[50, 50]) == (128, 0, 0)


def test_jitter_fill_is_image_mean_and_small_boxes_dropped():
    img, labels = scene(320, 240, RECTS)
    tiny = np.array([[0, 0.5, 0.5, 0.5 / 256, 0.2]], np.float32)  # half a network pixel wide
    _, boxes, _ = augment(img, np.concatenate([labels, tiny]), 256, 192, AugmentOptions(), np.random.default_rng(0))
    assert len(boxes) == 4
    mean = np.rint(img.reshape(-1, 3).mean(0))
    for seed in range(40):
        out, _, (pleft, ptop, pright, pbot, flip) = augment(img, labels, 256, 192, AugmentOptions(jitter=0.3),
                                                            np.random.default_rng(seed))
        if pleft < -20:  # the crop starts left of the image: the left border is fill
            np.testing.assert_allclose(out[:, 0].astype(float), np.broadcast_to(mean, (192, 3)), atol=1)
            return
    pytest.fail("no seed padded the left side")


def test_mosaic_keeps_boxes_on_objects():
    rng = np.random.default_rng(7)
    samples = []
    for k in range(4):  # four images, each with its own colours
        rects = [(int(x), int(y), int(x) + int(w), int(y) + int(h)) for x, y, w, h in
                 zip(rng.integers(0, 200, 4), rng.integers(0, 150, 4), rng.integers(30, 100, 4), rng.integers(30, 80, 4))]
        rects = [r for i, r in enumerate(rects) if all(iou(r, q) == 0 for q in rects[:i])]
        samples.append(scene(320, 240, rects, first_class=4 * k))
    seen = set()
    for seed in range(15):
        out, boxes = _mosaic(samples, 256, 256, AugmentOptions(jitter=0.3, flip=True, mosaic=True),
                             np.random.default_rng(seed))
        assert out.shape == (256, 256, 3)
        assert_boxes_on_objects(out, boxes)
        seen |= {int(c) // 4 for c in boxes[:, 0]}
    assert seen == {0, 1, 2, 3}  # objects of all four images show up


def _write_dataset(root, n=6):
    images = []
    for i in range(n):
        img, labels = scene(320, 240, RECTS[: 1 + i % 4])
        p = root / "JPEGImages" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        write_labels(label_path(p), labels)
        images.append(p)
    return images


def test_train_dataset_batches_and_determinism(tmp_path):
    images = _write_dataset(tmp_path)
    opts = AugmentOptions(jitter=0.3, flip=True, hue=0.1, saturation=1.5, exposure=1.5, mosaic=True, random=1.0)
    ds = TrainDataset(images, len(COLOURS), 128, 96, opts, seed=3)

    def batches(workers):
        sampler = DarknetBatchSampler(len(ds), 3, 128, 96, random=1.0, seed=5)
        dl = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers, worker_init_fn=worker_init_fn,
                        multiprocessing_context=WORKER_CONTEXT if workers else None)
        return [b for _ in range(2) for b in dl]

    single, multi = batches(0), batches(2)
    assert len(single) == 4
    for (xa, ta, ia), (xb, tb, ib) in zip(single, multi):  # worker processes change nothing
        assert torch.equal(xa, xb) and torch.equal(ta, tb) and [i["path"] for i in ia] == [i["path"] for i in ib]
    x, t, infos = single[0]
    assert x.dtype == torch.float32 and x.shape[:2] == (3, 3) and 0 <= x.min() and x.max() <= 1
    # the first batch has the largest size, as Darknet starts: round(1.4*128/32+1)*32 x round(1.4*96/32+1)*32
    assert x.shape[2:] == (160, 224)
    assert t.shape[1] == 6 and set(t[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    assert ((t[:, 2:] >= 0) & (t[:, 2:] <= 1)).all() and infos[0]["net_size"] == (x.shape[3], x.shape[2])
    # targets drawn back onto the batch image sit on their objects (no colour shifts here)
    ds.options = AugmentOptions(jitter=0.3, flip=True, mosaic=True, random=1.0)
    x, t, _ = collate([ds[(i, 160, 128, 100 + i)] for i in range(3)])
    for k in range(3):
        img = (x[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert_boxes_on_objects(img, t[t[:, 0] == k, 1:].numpy(), min_side=12, classes=range(4))
    # a plain int index: the default size, reproducible
    a, b = ds[2], ds[2]
    assert a[0].shape == (3, 96, 128) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_max_boxes():
    img, labels = scene(320, 240, RECTS)
    ds = TrainDataset(["unused.png"], 4, 128, 128, AugmentOptions(max_boxes=2), labels=[labels])
    ds._load = lambda i: (img, labels)
    assert len(ds[0][1]) == 2


def test_multiscale_sampler_follows_darknet():
    s = DarknetBatchSampler(100, 2, 416, 416, random=1.0, step=32, seed=0, max_batches=200)
    sizes = [b[0][1:3] for _ in range(4) for b in s]  # 4 epochs = 200 iterations
    assert sizes[0] == (608, 608)  # round(1.4*416/32+1)*32
    for i in range(0, 200, 10):  # constant within each block of 10
        assert len(set(sizes[i:i + 10])) == 1
    assert all(w % 32 == 0 and 288 <= w <= 608 and w == h for w, h in sizes)
    assert len(set(sizes)) > 3 and set(sizes[110:]) == {(608, 608)}  # resizes in the last 100 iterations: largest
    rng = np.random.default_rng(0)
    assert all(multiscale_size(rng, 416, 416, 1.0, 32)[0] in range(288, 609, 32) for _ in range(200))
    fixed = DarknetBatchSampler(10, 4, 320, 256, seed=0, drop_last=False)
    assert [len(b) for b in fixed] == [4, 4, 2] and {b[0][1:3] for b in fixed} == {(320, 256)}


@pytest.mark.parametrize("letter_box", [False, True])
def test_eval_dataset_maps_boxes_back(tmp_path, letter_box):
    images = _write_dataset(tmp_path, 4)
    ds = EvalDataset(images, len(COLOURS), 160, 160, letter_box=letter_box)
    x, t, infos = collate([ds[i] for i in range(4)])
    assert x.shape == (4, 3, 160, 160)
    for k, info in enumerate(infos):
        assert info["orig_size"] == (320, 240)
        boxes = t[t[:, 0] == k, 1:]
        img = (x[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert_boxes_on_objects(img, boxes.numpy(), classes=range(4))
        back = to_original_boxes(boxes[:, 1:], 320, 240, 160, 160, letter_box)
        np.testing.assert_allclose(back.numpy(), info["labels"][:, 1:], atol=1e-6)
    if letter_box:
        new_w, new_h, dx, dy = letterbox_size(320, 240, 160, 160)
        assert (new_w, new_h, dx, dy) == (160, 120, 0, 20)
        assert (x[0, :, :dy] == 0.5).all()  # Darknet pads with 0.5 grey (image.c:letterbox_image)


def test_loaders_from_a_cfg(tmp_path, root):
    from darknet_kd.data.darknet import read_data_file, write_data_file, write_list, write_names
    from darknet_kd.data.dataset import eval_loader, train_loader
    from darknet_kd.errors import DataError
    from darknet_kd.model import Darknet

    images = _write_dataset(tmp_path, 4)
    write_names(tmp_path / "d.names", [f"c{i}" for i in range(7)])
    write_list(tmp_path / "train.txt", images)
    write_data_file(tmp_path / "d.data", {"classes": 7, "train": "train.txt", "valid": "train.txt", "names": "d.names"})
    model = Darknet.from_cfg(root / "cfg" / "yolov4-tiny-drivesim.cfg")
    opts = AugmentOptions.from_model(model)  # [net] and the last [yolo]
    assert (opts.jitter, opts.resize, opts.random, opts.hue, opts.mosaic) == (0.3, 1.5, 0.0, 0.1, False)
    data = read_data_file(tmp_path / "d.data")
    x, t, infos = next(iter(train_loader(data, model, 2, workers=0, seed=1)))
    assert x.shape == (2, 3, 256, 256) and t.shape[1] == 6 and len(t) > 0
    x, t, infos = next(iter(eval_loader(data, model, 4, workers=0)))
    assert x.shape == (4, 3, 256, 256) and infos[0]["letter_box"] is False and infos[3]["orig_size"] == (320, 240)
    write_data_file(tmp_path / "d.data", {"classes": 16, "train": "train.txt", "names": "d.names"})
    with pytest.raises(DataError, match="classes=16 but the model's"):
        train_loader(read_data_file(tmp_path / "d.data"), model, 2, workers=0)
