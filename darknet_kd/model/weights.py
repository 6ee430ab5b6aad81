"""Darknet .weights read/write (parser.c:load_weights_upto / save_weights_upto).

Layout: int32 major, minor, revision; ``seen`` as uint64 when major*10+minor >= 2,
else uint32; then for each [convolutional] layer in cfg order: biases[n], and when
batch_normalize: scales[n], rolling_mean[n], rolling_variance[n]; then the weights
(OIHW).  All little-endian float32.  Other layer types we support store nothing.

A file that ends exactly after layer N-1 is a partial file (Darknet's
``.conv.N``): the first N layers load.  A file that ends inside a layer, or that
has bytes left over, is an error naming the layer and the byte counts.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError
from ..fileio import atomic_write
from .layers import Convolutional


def _header_size(major: int, minor: int) -> int:
    return 12 + (8 if major * 10 + minor >= 2 else 4)


def _layer_blobs(model, cutoff):
    """(layer index, layer, [tensors in file order]) for layers < cutoff that store weights."""
    n = len(model.layers) if cutoff is None else min(cutoff, len(model.layers))
    for m in list(model.layers)[:n]:
        if isinstance(m, Convolutional):
            yield m.index, m, m.weight_tensors()


def expected_size(model, cutoff=None) -> int:
    major, minor, _ = model.header
    return _header_size(major, minor) + 4 * sum(t.numel() for _, _, ts in _layer_blobs(model, cutoff) for t in ts)


def load_weights(model, path, cutoff: int | None = None) -> int:
    """Load ``path`` into ``model``.  With ``cutoff`` the file must hold exactly the
    layers [0, cutoff).  Without it, the file may hold all layers or stop cleanly at a
    layer boundary (partial file).  Returns the number of layers covered."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights: {e.strerror}", path) from None
    if len(data) < 12:
        raise WeightsError(f"file has {len(data)} bytes, a header needs at least 12", path, offset=0)
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    if major < 0 or minor < 0 or major > 1000 or minor > 1000:
        # Darknet's 'transpose' convention (>1000) is for [connected] layers only; absurd
        # numbers mean this is not a .weights file.
        raise WeightsError(f"bad header: version {major}.{minor}.{revision} is not a Darknet weights version",
                           path, offset=0)
    hsize = _header_size(major, minor)
    if len(data) < hsize:
        raise WeightsError(f"file has {len(data)} bytes, the version {major}.{minor} header needs {hsize}",
                           path, offset=len(data))
    seen = struct.unpack_from("<Q" if hsize == 20 else "<I", data, 12)[0]
    blobs = list(_layer_blobs(model, cutoff))
    offset = hsize
    loaded_upto = 0
    arrays = []
    total = len(data)
    for idx, m, tensors in blobs:
        need = 4 * sum(t.numel() for t in tensors)
        if offset == total and cutoff is None:
            break  # clean end at a layer boundary: partial file
        if offset + need > total:
            raise WeightsError(
                f"file too short: layer {idx} ({m.kind}, {m.out_shape.c} filters) needs {need} bytes at offset "
                f"{offset}, only {total - offset} left (file {total} bytes, expected {expected_size(model, cutoff)})",
                path, offset=offset)
        for t in tensors:
            k = t.numel()
            arrays.append((t, np.frombuffer(data, "<f4", k, offset)))
            offset += 4 * k
        loaded_upto = idx + 1
    if offset != total:
        raise WeightsError(
            f"file too long: {total - offset} bytes left after the last layer (file {total} bytes, "
            f"expected {expected_size(model, cutoff)})", path, offset=offset)
    if cutoff is not None and blobs and loaded_upto != blobs[-1][0] + 1:
        raise WeightsError(f"file ends after layer {loaded_upto - 1}, cutoff {cutoff} needs more", path, offset=offset)
    with torch.no_grad():
        for t, a in arrays:
            t.copy_(torch.from_numpy(a.copy()).view_as(t))
    model.header = (major, minor, revision)
    model.seen = int(seen)
    if not blobs:
        return 0
    return len(model.layers) if loaded_upto == blobs[-1][0] + 1 and cutoff is None else loaded_upto


def weights_bytes(model, cutoff: int | None = None) -> bytes:
    major, minor, revision = model.header
    head = struct.pack("<3i", major, minor, revision)
    head += struct.pack("<Q" if _header_size(major, minor) == 20 else "<I", int(model.seen))
    parts = [head]
    for _, _, tensors in _layer_blobs(model, cutoff):
        for t in tensors:
            parts.append(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return b"".join(parts)


def save_weights(model, path, cutoff: int | None = None) -> None:
    """Save the layers [0, cutoff) (all by default) in Darknet's format."""
    atomic_write(path, weights_bytes(model, cutoff))


def randomize(model, seed: int = 0, gain: float = 1.0) -> None:
    """Fill every stored tensor with seeded random values that keep activations O(1)
    through deep networks (weights ~ N(0, gain/fan_in), BN statistics near identity).
    Used by tests (reference models without downloads) and the demo."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m, _ in _layer_blobs(model, None):
            w = m.conv.weight
            fan_in = w[0].numel()
            w.copy_(torch.randn(w.shape, generator=g) * (gain / fan_in) ** 0.5)
            if m.bn is not None:
                n = m.bn.weight.numel()
                m.bn.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                m.bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.bn.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            else:
                m.conv.bias.copy_(torch.randn(m.conv.bias.shape, generator=g) * 0.1)
