"""The only Python entry to the C++/CUDA core ops (libdkd through ``darknet_kd._C``).

- :func:`nms` / :func:`nms_mask` — per-image, per-class greedy NMS as Darknet's
  ``do_nms_sort`` / ``diounms_sort`` (src/box.c), with a score threshold and max detections.
- :func:`yolo_decode` / :func:`yolo_decode_layer` — raw ``[yolo]`` head → candidate rows
  (objectness > thresh), the same values as ``Yolo.decode`` (model/layers.py), with
  Darknet's letterbox correction as an option.  ``Yolo.decode`` stays the differentiable
  path used in training.
- :func:`kd_loss` — the fused distillation loss (temperature KL or quality-focal BCE) as a
  ``torch.autograd.Function``: one pass computes the loss and the student gradient.

Tensors may live on the CPU or on a CUDA device (all on the same one); wrong dtype,
device, shape or a non-contiguous tensor raises :class:`darknet_kd.errors.OpError` naming
the argument.  CPU kernels use ``torch.get_num_threads()`` threads.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import NamedTuple

import torch

from .errors import OpError

__all__ = ["nms", "nms_mask", "NmsResult", "yolo_decode", "yolo_decode_layer", "YoloCandidates", "kd_loss",
           "NMS_KINDS", "core_info"]

# Darknet's [yolo] nms_kind values -> dkd_nms_kind.  cornersnms suppresses by plain IoU in
# Darknet's diounms_sort (its box merging is commented out), so it maps to IoU.
NMS_KINDS = {"default": 0, "iou": 0, "cornersnms": 0, "greedynms": 1, "diounms": 2}
KD_KINDS = {"kl": 0, "qfl": 1}

_ext = None
_threads = None


def _C():
    """The pybind11 module; ``$DKD_C_MODULE`` may name another build of it (the sanitizer
    run loads an ASan build this way)."""
    global _ext
    if _ext is None:
        path = os.environ.get("DKD_C_MODULE")
        try:
            if path:
                spec = importlib.util.spec_from_file_location("darknet_kd._C", path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"DKD_C_MODULE={path} is not a loadable module")
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            else:
                mod = importlib.import_module("darknet_kd._C")
        except ImportError as e:
            raise OpError(f"the C++ core (darknet_kd._C) is not built: {e}; run `make setup` "
                          f"(or `pip install -e .`)") from e
        _ext = mod
    return _ext


def core_info() -> dict:
    """Version, CPU kernel variant, CUDA build/devices of the loaded core."""
    c = _C()
    return {"version": c.version_string(), "cpu_isa": c.cpu_isa(), "cuda_compiled": c.cuda_compiled(),
            "cuda_devices": c.cuda_device_count(), "threads": c.get_num_threads()}


def _call(fn, *args):
    global _threads
    c = _C()
    t = torch.get_num_threads()
    if t != _threads:
        c.set_num_threads(t)
        _threads = t
    try:
        return fn(*args)
    except c.Error as e:
        status, message = e.args
        raise OpError(message) from None


def _device_args(t: torch.Tensor):
    """(dkd device, stream pointer) for a tensor."""
    if t.device.type == "cpu":
        return 0, 0
    if t.device.type == "cuda":
        if not _C().cuda_compiled():
            raise OpError("a CUDA tensor was given but libdkd was built without CUDA "
                          "(install with nvcc present, or move the tensors to the CPU)")
        return 1, torch.cuda.current_stream(t.device).cuda_stream
    raise OpError(f"tensors on {t.device} are not supported (CPU or CUDA only)")


class _DeviceGuard:
    def __init__(self, t: torch.Tensor):
        self.ctx = torch.cuda.device(t.device) if t.device.type == "cuda" else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _check(t, name: str, dtypes, device: torch.device | None = None, ndim: int | None = None,
           contiguous: bool = True) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise OpError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    if t.dtype not in dtypes:
        want = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise OpError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}, expected {want}")
    if device is not None and t.device != device:
        raise OpError(f"{name} is on {t.device}, the other inputs on {device}")
    if ndim is not None and t.dim() != ndim:
        raise OpError(f"{name} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    if contiguous and not t.is_contiguous():
        raise OpError(f"{name} is not contiguous (call .contiguous() first)")
    return t


# ---------------------------------------------------------------------------------- nms
class NmsResult(NamedTuple):
    """Kept (detection, class) pairs, ordered by image, then score descending (ties: lower
    class, then lower index).  ``index`` indexes the rows of ``boxes``/``scores``."""
    index: torch.Tensor  # (K,) int64
    cls: torch.Tensor    # (K,) int64
    score: torch.Tensor  # (K,) float32: scores[index, cls]


def nms_mask(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float = 0.45, *, score_thresh: float = 0.0,
             batch: torch.Tensor | None = None, num_images: int | None = None, max_det: int | None = None,
             kind: str = "default", beta_nms: float = 0.6) -> torch.Tensor:
    """Per-image, per-class greedy NMS; returns the (N, C) bool mask of surviving
    (detection, class) pairs — Darknet's "prob[k] not zeroed".

    ``boxes`` (N, 4) float32 cx, cy, w, h; ``scores`` (N, C) (or (N,)) float32, Darknet's
    ``objectness * class prob``; ``batch`` (N,) int64 image index (default: one image);
    ``num_images`` defaults to ``batch.max() + 1``.  A pair is a candidate when its score
    > ``score_thresh``.  Per image and class, candidates are visited by score descending
    (ties: lower index first — Darknet's qsort leaves ties unordered; cv2.dnn.NMSBoxes
    breaks them the same way) and each survivor removes later ones whose criterion is
    > ``iou_thresh``: ``kind`` is the [yolo] nms_kind: ``default`` (IoU, do_nms_sort),
    ``greedynms`` (IoU − (d²/c²)^0.6), ``diounms`` (IoU − (d²/c²)^beta_nms), ``cornersnms``
    (IoU).  ``max_det`` keeps the best max_det survivors per image (None: all).
    """
    if kind not in NMS_KINDS:
        raise OpError(f"kind={kind!r} is not one of {', '.join(NMS_KINDS)}")
    boxes = _check(boxes, "boxes", (torch.float32,), ndim=2)
    dev = boxes.device
    if boxes.shape[1] != 4:
        raise OpError(f"boxes has shape {tuple(boxes.shape)}, expected (N, 4) cx, cy, w, h")
    scores = _check(scores, "scores", (torch.float32,), dev)
    if scores.dim() == 1:
        scores = scores.unsqueeze(1)
    n = boxes.shape[0]
    if scores.dim() != 2 or scores.shape[0] != n or scores.shape[1] < 1:
        raise OpError(f"scores has shape {tuple(scores.shape)}, expected ({n}, C) or ({n},) to match boxes")
    c = scores.shape[1]
    if batch is not None:
        batch = _check(batch, "batch", (torch.int64,), dev, ndim=1)
        if batch.shape[0] != n:
            raise OpError(f"batch has {batch.shape[0]} entries, boxes has {n}")
        if num_images is None:
            num_images = int(batch.max()) + 1 if n else 1
    elif num_images is None:
        num_images = 1
    if max_det is not None and max_det < 1:
        raise OpError(f"max_det={max_det} must be >= 1 (None: no limit)")
    keep = torch.empty((n, c), dtype=torch.bool, device=dev)
    if n == 0:
        return keep
    device, stream = _device_args(boxes)
    with _DeviceGuard(boxes):
        _call(_C().nms, boxes.data_ptr(), scores.data_ptr(), 0 if batch is None else batch.data_ptr(), n, c,
              int(num_images), float(iou_thresh), float(score_thresh), NMS_KINDS[kind], float(beta_nms),
              int(max_det or 0), keep.data_ptr(), device, stream)
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float = 0.45, *, score_thresh: float = 0.0,
        batch: torch.Tensor | None = None, num_images: int | None = None, max_det: int | None = None,
        kind: str = "default", beta_nms: float = 0.6) -> NmsResult:
    """:func:`nms_mask` as a list of kept (index, class, score), ordered by image, then score
    descending (ties: lower class, then lower index).  Arguments as :func:`nms_mask`."""
    keep = nms_mask(boxes, scores, iou_thresh, score_thresh=score_thresh, batch=batch, num_images=num_images,
                    max_det=max_det, kind=kind, beta_nms=beta_nms)
    index, cls = keep.nonzero(as_tuple=True)
    sc = scores.reshape(keep.shape)[index, cls]
    # Stable sorts from the least to the most significant key (pairs come in index order).
    order = torch.sort(cls, stable=True).indices
    order = order[torch.sort(sc[order], descending=True, stable=True).indices]
    if batch is not None:
        order = order[torch.sort(batch[index[order]], stable=True).indices]
    return NmsResult(index[order], cls[order], sc[order])


# --------------------------------------------------------------------------- yolo_decode
class YoloCandidates(NamedTuple):
    """Decoded [yolo] rows whose objectness > thresh, in (image, anchor, row, col) order."""
    rows: torch.Tensor   # (M, 5+C) float32: cx, cy, w, h, objectness, class probs
    batch: torch.Tensor  # (M,) int64 image index
    index: torch.Tensor  # (M,) int64 row in Yolo.decode's output: anchor*H*W + row*W + col


def yolo_decode(head: torch.Tensor, anchors, net_w: int, net_h: int, thresh: float, *, scale_x_y: float = 1.0,
                new_coords: bool = False, letterbox_wh=None) -> YoloCandidates:
    """Decode a raw [yolo] head (B, A*(5+C), H, W) float32 and keep rows with objectness
    > ``thresh`` (Darknet's get_yolo_detections).  Values are ``Yolo.decode``'s: cx, cy, w, h
    relative to the ``net_w`` x ``net_h`` input, objectness, class probabilities (not
    multiplied by objectness).  ``anchors``: the layer's masked anchors, (A, 2) pixels.
    ``letterbox_wh``: (B, 2) original image (w, h) — applies Darknet's correct_yolo_boxes
    letterbox correction so boxes become relative to the original image.  The head may be
    any strided view (no copy)."""
    head = _check(head, "head", (torch.float32,), ndim=4, contiguous=False)
    dev = head.device
    anchors_t = torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2).contiguous().to(dev)
    a = anchors_t.shape[0]
    b, ch, h, w = head.shape
    if a < 1 or ch % a or ch // a < 6:
        raise OpError(f"head has {ch} channels, expected num_anchors*(5+classes) = {a}*(5+classes), classes >= 1")
    per = ch // a
    lb = None
    if letterbox_wh is not None:
        lb = torch.as_tensor(letterbox_wh, dtype=torch.int32).reshape(-1, 2).contiguous()
        if lb.shape[0] != b:
            raise OpError(f"letterbox_wh has {lb.shape[0]} sizes, the head has {b} images")
        if bool((lb <= 0).any()):
            raise OpError(f"letterbox_wh has a non-positive image size: {lb.tolist()}")
        lb = lb.to(dev)
    device, stream = _device_args(head)
    c = _C()
    args = (head.data_ptr(), b, ch, h, w, *head.stride(), a, anchors_t.data_ptr(), int(net_w), int(net_h),
            float(scale_x_y), int(bool(new_coords)), float(thresh), 0 if lb is None else lb.data_ptr())
    with _DeviceGuard(head):
        m = _call(c.yolo_decode, *args, 0, 0, 0, device, stream)
        rows = torch.empty((m, per), dtype=torch.float32, device=dev)
        index = torch.empty((m,), dtype=torch.int64, device=dev)
        if m:
            got = _call(c.yolo_decode, *args, rows.data_ptr(), index.data_ptr(), m, device, stream)
            if got != m:  # the head changed between the two calls (another stream wrote it)
                raise OpError(f"yolo_decode: the head changed while decoding ({m} then {got} candidates)")
    per_image = max(a * h * w, 1)
    return YoloCandidates(rows, index // per_image, index % per_image)


def yolo_decode_layer(layer, head: torch.Tensor, thresh: float, *, net_wh: tuple[int, int] | None = None,
                      letterbox_wh=None) -> YoloCandidates:
    """:func:`yolo_decode` with the anchors, scale_x_y and new_coords of a model's [yolo]
    module (``model.yolo_layers[i]``); ``net_wh`` defaults to the cfg's input size."""
    net_w, net_h = net_wh or (layer.net_w, layer.net_h)
    anchors = [layer.anchors[m] for m in layer.mask]
    return yolo_decode(head, anchors, net_w, net_h, thresh, scale_x_y=layer.scale_x_y,
                       new_coords=bool(layer.new_coords), letterbox_wh=letterbox_wh)


# ------------------------------------------------------------------------------- kd_loss
def _location_tensor(t, name: str, shape, dtypes, dev) -> torch.Tensor | None:
    """A per-location weight/mask: broadcast to ``shape`` and made dense."""
    if t is None:
        return None
    t = _check(t, name, dtypes, dev, contiguous=False)
    try:
        t = torch.broadcast_to(t, shape)
    except RuntimeError:
        raise OpError(f"{name} has shape {tuple(t.shape)}, which does not broadcast to the locations "
                      f"{tuple(shape)} (the logits' shape without the class axis)") from None
    return t.contiguous()


class _KdLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student, teacher, weight, mask, kind, outer, k, inner, temperature, beta):
        need_grad = ctx.needs_input_grad[0]
        dtype = 0 if student.dtype == torch.float32 else 1
        loss = torch.empty((), dtype=student.dtype, device=student.device)
        grad = torch.empty_like(student) if need_grad else None
        device, stream = _device_args(student)
        with _DeviceGuard(student):
            _call(_C().kd_loss, student.data_ptr(), teacher.data_ptr(), 0 if weight is None else weight.data_ptr(),
                  0 if mask is None else mask.data_ptr(), outer, k, inner, KD_KINDS[kind], float(temperature),
                  float(beta), dtype, loss.data_ptr(), 0 if grad is None else grad.data_ptr(), device, stream)
        if need_grad:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None, None, None, None


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str = "kl", dim: int = 1,
            temperature: float = 1.0, beta: float = 1.0, weight: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fused dense distillation loss, summed over locations (divide by your normaliser).

    ``student``/``teacher``: logits of the same shape, float32 or float64, contiguous;
    ``dim`` is the class (or box-bin) axis, every other index is a location.

    - ``kind="kl"``: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per location — LD's
      knowledge_distillation_kl_div_loss (LD takes the mean over the K bins: multiply the
      weight by 1/K for that) and the class-KD / LPLD KL.
    - ``kind="qfl"``: ``Σ_k BCE(s, σ(t)) · |σ(s) − σ(t)|^beta`` per location — CrossKD's
      quality-focal loss against the teacher's sigmoid targets.

    ``weight`` (per location, broadcast to the shape without ``dim``) multiplies each
    location's loss; ``mask`` (bool, same) removes locations.  A location with weight 0
    or mask False contributes exactly 0 (its logits may be anything).  Gradients flow to
    ``student`` only: the teacher, weight and mask are constants, as in LD and CrossKD.
    """
    if kind not in KD_KINDS:
        raise OpError(f"kind={kind!r} is not one of {', '.join(KD_KINDS)}")
    student = _check(student, "student", (torch.float32, torch.float64))
    dev = student.device
    teacher = _check(teacher, "teacher", (student.dtype,), dev)
    if teacher.shape != student.shape:
        raise OpError(f"teacher has shape {tuple(teacher.shape)}, student {tuple(student.shape)}")
    if student.dim() < 1:
        raise OpError("student is a scalar; expected logits with a class axis")
    d = dim % student.dim() if -student.dim() <= dim < student.dim() else None
    if d is None:
        raise OpError(f"dim={dim} is out of range for a {student.dim()}-d tensor")
    shape = tuple(student.shape)
    outer = 1
    for s in shape[:d]:
        outer *= s
    inner = 1
    for s in shape[d + 1:]:
        inner *= s
    k = shape[d]
    if k < 1:
        raise OpError(f"student has an empty class axis (dim={dim}, shape {shape})")
    loc_shape = shape[:d] + shape[d + 1:]
    weight = _location_tensor(weight, "weight", loc_shape, (student.dtype,), dev)
    if mask is not None:
        mask = _location_tensor(mask, "mask", loc_shape, (torch.bool,), dev)
    if temperature <= 0:
        raise OpError(f"temperature={temperature} must be positive")
    if beta <= 0:
        raise OpError(f"beta={beta} must be positive")
    return _KdLoss.apply(student, teacher.detach(), weight, mask, kind, outer, k, inner, temperature, beta)
