"""DriveSim domains: image formation models applied to one scene's :class:`~.render.Layers`.

All domains work in linear light (sRGB approximated by gamma 2: ``lin = (v/255)²``) and
end with ``v = 255·sqrt(lin)`` quantised to uint8.  Every domain shares the surface
texture (a fixed multi-scale grain bank) so only lighting and imaging change:

* ``day``   — sun light with exposure and white-balance jitter, soft shadows under
  vehicles and people, faint sensor noise.
* ``night`` — dark sky with horizon sky-glow; *local* light: every street lamp, lit shop
  front, oncoming head light and the ego car's low beams is a point or cone light whose
  contribution falls off with 3-D distance (pixels are back-projected with the depth
  layer), so near/lit objects are bright and the rest nearly black; emissive head/tail
  lights, lamp heads, lit windows and bus interiors with two-scale glow; motion blur;
  veiling glare (low contrast); signal-dependent sensor noise after a high auto-exposure
  gain.
* ``fog``   — overcast light and Koschmieder haze ``I·t + A·(1−t)``, ``t = exp(−depth/V)``
  per pixel (V = 25–70 m), lights with halos.
* ``rain``  — dark overcast, desaturated, wet darkened road that mirrors the sky with
  distance, light haze, rain streaks, out-of-focus drops on the windscreen, noise.

None of these is a global colour transform: light sources, depth and noise vary per
pixel, so no global normalisation maps one domain onto another.
"""
from __future__ import annotations

import cv2
import numpy as np

from .banks import bank, bank_size, crop
from .render import FIRST_LIGHT, GROUND, SKY, SKY_DEPTH, Layers

DOMAINS = ("day", "night", "fog", "rain")
# Speed notes (416x416, one core): numpy broadcasting against a length-3 colour axis is
# ~10x slower than OpenCV's arithmetic, so per-pixel factors are expanded with cv2.merge;
# per-channel constants go through cv2.transform (a diagonal matrix: 0.06 ms) rather than
# cv2.multiply with a scalar tuple (0.45 ms); clamping at 0 is cv2.threshold (0.05 ms
# against np.maximum's 0.25 ms); cv2.exp takes ~30x longer where its result is
# subnormal or underflows, so exponents are clamped at :data:`EXP_MIN` first (:func:`_exp`).

def _c3(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) contiguous copy."""
    return cv2.merge([a, a, a])


SHADE = 1.0 - np.arange(256, dtype=np.float32) * np.float32(0.55 / 255)     # day: light left by a shadow value
EXP_MIN = -80.0        # exp(-80) = 1.8e-35: zero for every image, still a normal float32


def _exp(x: np.ndarray, scale: float) -> np.ndarray:
    """exp(scale·x) (a new array), the exponent clamped at :data:`EXP_MIN`."""
    y = x * np.float32(scale)
    cv2.max(y, EXP_MIN, dst=y)
    return cv2.exp(y, dst=y)


def _clamp0(a: np.ndarray) -> np.ndarray:
    """max(a, 0) in place (float32)."""
    return cv2.threshold(a, 0.0, 0.0, cv2.THRESH_TOZERO, dst=a)[1]


def _not(ids, value):
    """uint8 mask of the pixels whose id is not ``value`` (for masked OpenCV ops)."""
    return cv2.compare(ids, value, cv2.CMP_NE)


def _finish(lin: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-ish (gamma 2) uint8, saturating."""
    return cv2.convertScaleAbs(cv2.sqrt(_clamp0(lin), lin), alpha=255.0)


def _noise(lin, rng, read, shot=0.0):
    """Sensor noise added in place: std = sqrt(read² + shot·lin) (linear units)."""
    H, W = lin.shape[:2]
    n = crop(bank("noise", bank_size(H, W)), rng, H, W)
    if shot <= 0:
        cv2.scaleAdd(n, read, lin, dst=lin)
        return
    sd = cv2.transform(lin, np.hstack([np.eye(3) * shot, np.full((3, 1), read * read)]).astype(np.float32))
    cv2.sqrt(_clamp0(sd), sd)
    cv2.multiply(sd, n, dst=sd)
    cv2.add(lin, sd, dst=lin)


def _glow(E, sigma_small, sigma_big, k_small, k_big):
    """Two-scale bloom of an emissive image: the small one (``sigma_small``, pixels at 1/4
    resolution) computed at 1/4 resolution, the wide one (``sigma_big``, same units) at 1/8
    (a smooth halo: 4x fewer pixels, half the taps), both upsampled bilinearly."""
    H, W = E.shape[:2]
    w4, h4 = max(W // 4, 2), max(H // 4, 2)
    s = cv2.resize(E, (w4, h4), interpolation=cv2.INTER_AREA)
    s8 = cv2.resize(s, (max(w4 // 2, 2), max(h4 // 2, 2)), interpolation=cv2.INTER_AREA)
    wide = cv2.resize(cv2.GaussianBlur(s8, (0, 0), sigma_big / 2), (w4, h4), interpolation=cv2.INTER_LINEAR)
    g = cv2.addWeighted(cv2.GaussianBlur(s, (0, 0), sigma_small), k_small, wide, k_big, 0.0)
    return cv2.resize(g, (W, H), interpolation=cv2.INTER_LINEAR)


def _set_sky(lin, L, top, horizon, power=1.5):
    """Replace the sky pixels by a vertical gradient (linear colours)."""
    hz = int(np.clip(np.ceil(L.camera.horizon - 0.5), 0, L.ids.shape[0]))
    if hz == 0:
        return
    t = (np.arange(hz, dtype=np.float32) / hz)[:, None] ** power
    top, horizon = np.float32(top), np.float32(horizon)
    rows = (top + (horizon - top) * t)[:, None, :]
    sky = cv2.resize(rows, (lin.shape[1], hz), interpolation=cv2.INTER_NEAREST)
    cv2.copyTo(sky, (L.ids[:hz] == SKY).view(np.uint8), lin[:hz])


def _emission(L, scale=1.0, windows=True):
    """Radiance image ``scale·palette[emit]`` (H, W, 3): every light seen, or the objects'
    lights only (``windows=False``)."""
    table = L.palette[:, 0] * np.float32(scale)
    if not windows:
        table[:FIRST_LIGHT] = 0.0
    # three 1-channel lookups: 0.24 ms, a 3-channel table 0.4 ms (not vectorised)
    return cv2.merge([cv2.LUT(L.emit, np.ascontiguousarray(table[:, c])) for c in range(3)])


def _object_lights(L, k):
    """Daylight emission ``k·radiance/255``: the objects' lights (head/tail, traffic and
    lamp heads, bus interiors), not the windows; None when no object light is seen."""
    if not cv2.countNonZero(cv2.compare(L.emit, FIRST_LIGHT, cv2.CMP_GE)):
        return None
    return _emission(L, k / 255.0, windows=False)


# ---------------------------------------------------------------- domains

def day(L: Layers, rng) -> np.ndarray:
    e = rng.uniform(0.8, 1.15)
    wb = e * rng.uniform(0.93, 1.07, 3)
    lin = cv2.transform(L.lin, np.diag(wb).astype(np.float32))
    if L.shadow.any():
        sh = cv2.GaussianBlur(L.shadow, (3, 3), 0)
        cv2.bitwise_and(sh, cv2.compare(L.ids, GROUND, cv2.CMP_EQ), dst=sh)          # on the ground only
        cv2.multiply(lin, _c3(cv2.LUT(sh, SHADE)), dst=lin)
    _noise(lin, rng, 0.003)
    return _finish(lin)


def _night_light(L: Layers, ambient, ego_gain, reach):
    """Illumination (H, W, 3): ambient + every point light + the ego low beams, evaluated
    at 1/4 resolution on back-projected pixels (depth layer) and upsampled."""
    cam = L.camera
    H, W = L.ids.shape
    w4, h4 = max(W // 4, 2), max(H // 4, 2)
    Z = cv2.resize(L.depth, (w4, h4), interpolation=cv2.INTER_NEAREST)
    xs = (np.arange(w4, dtype=np.float32) + 0.5) * np.float32(W / w4)
    ys = (np.arange(h4, dtype=np.float32) + 0.5) * np.float32(H / h4)
    X = (xs[None, :] - np.float32(cam.cx)) * Z / np.float32(cam.f)
    Y = np.float32(cam.cam_h) - (ys[:, None] - np.float32(cam.horizon)) * Z / np.float32(cam.f)
    # the ego car's low beams: a cone down the road, fading with distance
    beam = ego_gain * np.exp(-Z / reach) * np.exp(-(X / (0.3 * Z + 1.2)) ** 2) * (Y < 1.8)
    lights = np.asarray(L.lights, np.float32).reshape(-1, 8)
    lx, ly, lz, radius, intensity = (lights[:, k, None] for k in (0, 1, 2, 6, 7))
    d2 = X.ravel() - lx                                                        # (n_lights, n_px)
    np.square(d2, out=d2)
    t = np.subtract(Y.ravel(), ly)
    d2 += np.square(t, out=t)
    np.subtract(Z.ravel(), lz, out=t)
    d2 += np.square(t, out=t)
    d2 /= radius ** 2
    d2 += np.float32(1.0)
    atten = np.divide(intensity, d2, out=d2)                                   # intensity / (1 + d²/r²)
    # (3, n_px); einsum without BLAS: the same sums whatever the thread settings (byte-identical output)
    rgb = np.einsum("lc,lp->cp", lights[:, 3:6], atten)
    rgb += np.float32((0.95, 0.97, 1.0))[:, None] * beam.ravel()
    rgb += np.float32(ambient)[:, None]
    rgb[:, Z.ravel() >= SKY_DEPTH * 0.5] = 0.0
    light = cv2.merge([r.reshape(h4, w4) for r in rgb])
    return cv2.resize(light, (W, H), interpolation=cv2.INTER_LINEAR)


def night(L: Layers, rng) -> np.ndarray:
    H, W = L.ids.shape
    gain = rng.uniform(1.5, 3.0)                                               # auto exposure
    ambient = rng.uniform(0.004, 0.02) * np.float32((1.1, 1.0, 0.9))            # moon / sky glow, bluish
    light = _night_light(L, ambient, rng.uniform(0.06, 0.2), rng.uniform(15, 35))
    lin = cv2.multiply(L.lin, light, scale=gain)
    glow_c = gain * rng.uniform(0.01, 0.04) * np.array((0.5, 0.7, 1.0))        # sodium sky glow at the horizon
    _set_sky(lin, L, gain * np.array((0.0025, 0.0012, 0.0008)), glow_c, power=3.0)
    k = gain * rng.uniform(1.2, 2.2) / 255.0
    E = _emission(L)
    cv2.scaleAdd(E, k, lin, dst=lin)
    lin += _glow(E, 1.2 * W / 416, 5.0 * W / 416, 0.35 * k, 0.12 * k)
    blur = int(rng.integers(1, 6) * max(W, 256) / 416)                         # motion blur (px)
    if blur >= 2:
        lin = cv2.filter2D(lin, -1, np.full((1, blur), 1.0 / blur, np.float32), borderType=cv2.BORDER_REFLECT)
    lin += np.float32(rng.uniform(0.0005, 0.004))                              # veiling glare: low contrast
    _noise(lin, rng, rng.uniform(0.004, 0.012), rng.uniform(0.002, 0.008))
    return _finish(lin)


def fog(L: Layers, rng) -> np.ndarray:
    e = rng.uniform(0.65, 0.95)
    a = rng.uniform(0.6, 0.82)
    A = (np.array((1.03, 1.0, 0.97)) * a) ** 2 * e
    # exposure and haze: (lin·e − A)·t + A, the first step one affine cv2.transform
    t = _exp(L.depth, -1.0 / rng.uniform(25.0, 70.0))
    lin = cv2.transform(L.lin, np.hstack([np.eye(3) * e, -A[:, None]]).astype(np.float32))
    cv2.multiply(lin, _c3(t), dst=lin)
    cv2.add(lin, (*A.tolist(), 0.0), dst=lin)
    E = _object_lights(L, 0.5)
    if E is not None:                            # lights pierce the fog more than surfaces
        E += _glow(E, 2.0, 6.0, 0.8, 0.6)
        cv2.multiply(E, _c3(cv2.sqrt(cv2.sqrt(t))), dst=E)
        lin += E
    _noise(lin, rng, 0.004)
    return _finish(lin)


def rain(L: Layers, rng) -> np.ndarray:
    H, W = L.ids.shape
    e = rng.uniform(0.35, 0.65)
    M = np.float32(e * (0.6 * np.eye(3) + 0.4 / 3))                            # desaturate 40 %
    lin = cv2.transform(L.lin, M)
    sky = 0.42 * e
    _set_sky(lin, L, (sky * 0.8,) * 3, (sky * 1.1,) * 3)
    # wet road: darker asphalt that mirrors the grey sky more with distance,
    # lin·(1 − 0.45·w + 0.35·w²) + c·w; then grey haze (Koschmieder, A = a) and rain
    # streaks (k·s): all grey, so one per-pixel gain and one per-pixel offset, two
    # full-colour passes:  lin·m + o,  m = (1 − 0.45·w + 0.35·w²)·t,  o = (c·w − a)·t + a + k·s
    wet = 1.0 - _exp(L.depth, -1.0 / 25.0)
    cv2.subtract(wet, wet, dst=wet, mask=_not(L.ids, GROUND))
    t = _exp(L.depth, -1.0 / rng.uniform(90.0, 220.0))
    c, a = np.float32(0.35 * sky), np.float32(sky * 1.05)
    m = np.float32(1.0) - np.float32(0.45) * wet + np.float32(0.35) * wet * wet
    m *= t
    o = (c * wet - a) * t
    o += a
    streak = crop(bank("streaks", bank_size(H, W, pow2=True)), rng, H, W)
    cv2.scaleAdd(streak, rng.uniform(0.03, 0.09), o, dst=o)
    cv2.multiply(lin, _c3(m), dst=lin)
    cv2.add(lin, _c3(o), dst=lin)
    E = _object_lights(L, 0.5)
    if E is not None:
        lin += E
        lin += _glow(E, 1.5, 4.0, 0.6, 0.3)
    n_drops = int(rng.integers(0, 7))
    if n_drops:                                  # out-of-focus drops on the windscreen
        m = np.zeros((H, W), np.uint8)
        for _ in range(n_drops):
            cv2.circle(m, (int(rng.integers(0, W)), int(rng.integers(0, H))), int(rng.uniform(0.02, 0.06) * W), 255, -1)
        small = cv2.resize(lin, (max(W // 8, 2), max(H // 8, 2)), interpolation=cv2.INTER_AREA)
        blurred = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
        cv2.copyTo(blurred * np.float32(1.08), m, lin)
    _noise(lin, rng, 0.005, 0.002)
    return _finish(lin)


RENDERERS = {"day": day, "night": night, "fog": fog, "rain": rain}


def render_domain(L: Layers, domain: str, rng: np.random.Generator) -> np.ndarray:
    """The BGR uint8 image of ``L`` in ``domain``."""
    return RENDERERS[domain](L, rng)
