"""Rasterise a :class:`~.scene.Scene` into domain-independent layers and exact labels.

:func:`rasterize` draws, with OpenCV polygon/ellipse fills (no anti-aliasing, 1/8 px
sub-pixel vertices), these layers once per scene; every domain (:mod:`.domains`) is an
image formation model applied to them:

* ``albedo`` (H, W, 3) uint8 BGR: surface colours (the day sky included); ``lin`` the
  same in linear light with the shared surface grain (:func:`.banks.linear_albedo`);
* ``emit``   (H, W) uint8 index of the light seen at each pixel in ``palette`` (256, 1, 3)
  float32 radiances (BGR, 0..255 scale; a cv2.LUT table): 0 none, 1 and 2 the warm and
  cool lit windows (:data:`WINDOW_LIGHT`; a nearer facade or object hides them), from
  :data:`FIRST_LIGHT` on the objects' lights -- lamps, head/tail and traffic lights, bus
  interiors (0 at day); ``emis`` and ``windows`` are the two parts as images;
* ``depth``  (H, W) float32 metres along the view axis (sky: :data:`SKY_DEPTH`);
* ``ids``    (H, W) int16: 0 sky, 1 ground, 2 building, ``3 + k`` the k-th object;
* ``shadow`` (H, W) uint8 sun shadow under vehicles and people (day only; drawn on first
  use from ``shadows``, the fixed-point ellipses, as only the day domain reads it);
* ``lights`` (N, 8) float32 point lights ``X, Y, Z, B, G, R, radius, intensity`` (colour
  0..1; the contribution at distance d is ``intensity·colour / (1 + d²/radius²)``).

Painter's model: background first (sky, ground, road, buildings), then objects far to
near; an object is hidden where a building is nearer (a per-pixel depth test, so cross
traffic behind a corner building is occluded correctly).

Labels are exact: each labelled object's box is the extent of its *visible* pixels
(``ids == 3 + k`` after all objects are drawn).  An object is dropped when less than
:data:`MIN_VISIBLE` of its full silhouette (drawn alone, off-image parts included) is
visible — i.e. more than 70 % hidden by nearer objects or cut off by the image border —
or when its visible box is smaller than :data:`MIN_BOX_PX` pixels on a side or
:data:`MIN_BOX_AREA` in area.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

import cv2
import numpy as np

from ...errors import DarknetKDError
from .banks import linear_albedo
from .scene import Scene
from .shapes import SHAPES

SKY, GROUND, BUILDING, FIRST_OBJECT = 0, 1, 2, 3
SKY_DEPTH = 1.0e4
NEAR = 2.0                     # metres: nothing nearer is drawn
MIN_VISIBLE = 0.30             # minimum visible fraction of an object's silhouette
MIN_BOX_PX = 3                 # minimum visible box side (pixels)
MIN_BOX_AREA = 16              # minimum visible box area (pixels²)
SHIFT = 3                      # OpenCV fractional bits of vertex coordinates
_ONE = 1 << SHIFT
WINDOW_LIGHT = ((0.0, 0.0, 0.0), (25.0, 60.0, 90.0), (80.0, 78.0, 70.0))   # radiance (BGR) of window states
FIRST_LIGHT = len(WINDOW_LIGHT)  # emit index of the first object light colour


@dataclass
class Camera:
    width: int
    height: int
    f: float
    cx: float
    horizon: float
    cam_h: float

    @classmethod
    def of(cls, scene: Scene, width: int, height: int) -> "Camera":
        return cls(width, height, scene.fx * width, (0.5 + scene.yaw) * width, scene.hy * height, scene.cam_h)

    def project(self, X, Y, Z):
        Z = np.asarray(Z, np.float64)
        return self.cx + self.f * np.asarray(X) / Z, self.horizon + self.f * (self.cam_h - np.asarray(Y)) / Z


@dataclass
class Layers:
    camera: Camera
    albedo: np.ndarray | None
    lin: np.ndarray | None      # linear-light albedo with surface grain (float32, gamma 2)
    emit: np.ndarray | None     # (H, W) uint8 index into palette (see the module docstring)
    palette: np.ndarray | None  # (256, 1, 3) float32 radiance of every emit index
    depth: np.ndarray | None
    ids: np.ndarray
    shadows: np.ndarray | None  # (N, 4) int32 fixed-point shadow ellipses: centre x, y, axes
    lights: np.ndarray
    labels: np.ndarray          # (N, 5) float32: class, cx, cy, w, h (relative)
    boxes: np.ndarray           # (N, 4) int32 pixel boxes x0, y0, x1, y1 (exclusive)
    visible: np.ndarray         # (N,) visible fraction of each labelled object
    dropped: int                # labelled-class objects dropped by the visibility rules
    _shadow: np.ndarray | None = field(default=None, repr=False)

    @property
    def shadow(self) -> np.ndarray | None:
        """(H, W) uint8 sun shadow (255 under the objects), drawn once on first use."""
        if self._shadow is None and self.shadows is not None:
            self._shadow = np.zeros(self.ids.shape, np.uint8)
            for cx, cy, ax, ay in self.shadows.tolist():
                cv2.ellipse(self._shadow, (cx, cy), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_8, SHIFT)
        return self._shadow

    @property
    def emis(self) -> np.ndarray:
        """(H, W, 3) float32 radiance of the objects' lights (0 elsewhere)."""
        table = self.palette.copy()
        table[:FIRST_LIGHT] = 0.0
        return cv2.LUT(cv2.merge([self.emit] * 3), table)

    @property
    def windows(self) -> np.ndarray:
        """(H, W) uint8 state of the window glass seen: 0 none or dark, 1 warm, 2 cool."""
        return np.where(self.emit < FIRST_LIGHT, self.emit, 0).astype(np.uint8)


def _fix(a):
    return np.round(np.asarray(a, np.float64) * _ONE).astype(np.int32)


# ---------------------------------------------------------------- background

def _ground_quads(cam, X0, X1, z0, z1):
    """Projected ground quads with lateral span [X0, X1] and depth span [z0, z1] (arrays);
    the ground starts at 0.5 m, below the bottom of any image."""
    z0 = np.maximum(z0, 0.5)
    z1 = np.maximum(z1, 0.5)
    xs = np.stack([X0, X1, X1, X0], -1)
    zs = np.stack([z0, z0, z1, z1], -1)
    x, y = cam.project(xs, 0.0, zs)
    return np.stack([x, y], -1)


def _facade_quads(cam, X, z0, z1, v0, v1):
    """Projected quads on the vertical plane X (arrays broadcast): Z in [z0, z1], height [v0, v1]."""
    zs = np.stack(np.broadcast_arrays(z0, z1, z1, z0), -1)
    vs = np.stack(np.broadcast_arrays(v0, v0, v1, v1), -1)
    x, y = cam.project(np.asarray(X)[..., None], vs, zs)
    return np.stack([x, y], -1)


def _polys(img, quads, color):
    if len(quads):
        cv2.fillPoly(img, list(_fix(quads)), color, cv2.LINE_8, SHIFT)


def _ground(albedo, scene: Scene, cam: Camera):
    """Road, kerbs, lane markings, crosswalk and the cross street's asphalt, in that order:
    all quads projected at once, one fill per run of equal colour (never overlapping)."""
    c, far = scene.colors, 3000.0
    q = [(scene.road_l, scene.road_r, 0.5, far, "road")]
    q += [(X - 0.15, X + 0.15, 0.5, far, "curb") for X in (scene.road_l, scene.road_r)]
    for X, kind in scene.lane_lines:
        if kind == "dash":
            q += [(X - 0.07, X + 0.07, z, z + 3.0, "marking") for z in np.arange(NEAR + (X * 7.3) % 9, 300, 9.0)]
        else:
            q += [(X + o - 0.07, X + o + 0.07, 0.5, far, "median" if kind == "double" else "marking")
                  for o in ((-0.2, 0.2) if kind == "double" else (0.0,))]
    if scene.crosswalk:
        z0, z1 = scene.crosswalk
        q += [(x, x + 0.5, z0, z1, "marking") for x in np.arange(scene.road_l + 0.3, scene.road_r - 0.3, 1.0)]
    if scene.intersection:
        q.append((-300.0, 300.0, *scene.intersection, "road"))
    a = np.array([r[:4] for r in q], np.float64)
    pts = _fix(_ground_quads(cam, a[:, 0], a[:, 1], a[:, 2], a[:, 3]))
    start = 0
    for i in range(1, len(q) + 1):
        if i == len(q) or q[i][4] != q[start][4]:
            cv2.fillPoly(albedo, pts[start:i], c[q[start][4]], cv2.LINE_8, SHIFT)
            start = i


def _background(scene: Scene, cam: Camera, want_color: bool, dt=np.uint8):
    """Sky, ground and buildings: the 4-channel albedo canvas (BGR + object id 0) of type
    ``dt``, depth, ids, the emit layer with the window states (:class:`Layers` ``emit``)
    and the shop-front lights.  A building's windows are filled in
    its painter's turn, one fill per night state with the state in the canvas' fourth
    channel, so a nearer facade hides a farther building's lit windows as it hides their
    glass; the channel is then moved out into the emit layer and cleared."""
    W, H = cam.width, cam.height
    c = scene.colors
    hz = int(np.clip(np.ceil(cam.horizon - 0.5), 0, H))
    ids = np.empty((H, W), np.int16)
    ids[:hz], ids[hz:] = SKY, GROUND
    depth = np.empty((H, W), np.float32)
    depth[:hz] = SKY_DEPTH
    rows = np.arange(hz, H, dtype=np.float32) + 0.5 - cam.horizon
    depth[hz:] = np.minimum(cam.f * cam.cam_h / np.maximum(rows, 1e-3), SKY_DEPTH)[:, None]
    albedo = None
    if want_color:
        albedo = np.empty((H, W, 4), dt)
        if hz:
            t = (np.arange(hz, dtype=np.float32) / hz)[:, None]
            top, hor = np.array(c["sky_top"], np.float32), np.array(c["sky_horizon"], np.float32)
            rows = np.zeros((hz, 1, 4), dt)
            rows[:, 0, :3] = (top + (hor - top) * t ** 1.5).astype(np.uint8)
            albedo[:hz] = cv2.resize(rows, (W, hz), interpolation=cv2.INTER_NEAREST)
        cv2.rectangle(albedo, (0, hz), (W, H), c["walk"], -1)
        _ground(albedo, scene, cam)

    # buildings, far to near; facade depth per column from the plane X
    xb = np.zeros((H, W), np.float32)
    lights = []
    blds = sorted((b for b in scene.buildings if b.z1 > NEAR), key=lambda b: -b.z0)
    if want_color:
        wq, wb, lit = _windows(cam, blds, scene.lit_seed)
        key = 3 * wb + lit                                   # by building, then night state
        order = np.argsort(key, kind="stable")
        wq = wq[order]
        starts = np.searchsorted(key[order], np.arange(3 * len(blds) + 1)).tolist()
    if blds:
        fq = _fix(_facade_quads(cam, np.array([b.X for b in blds]), np.array([max(b.z0, NEAR) for b in blds]),
                                np.array([b.z1 for b in blds]), 0.0, np.array([b.h for b in blds])))
    for k, b in enumerate(blds):
        pts = [fq[k]]
        cv2.fillPoly(xb, pts, float(b.X), cv2.LINE_8, SHIFT)
        if want_color:
            tone = 0.82 if b.side < 0 else 1.0                      # the sun lights one side more
            cv2.fillPoly(albedo, pts, tuple(int(v * tone) for v in b.color), cv2.LINE_8, SHIFT)
            for state in range(3):
                a, e = starts[3 * k + state], starts[3 * k + state + 1]
                if a < e:
                    cv2.fillPoly(albedo, wq[a:e], (*b.window, state), cv2.LINE_8, SHIFT)
            if b.shop:                                   # a lit shop front lights the sidewalk at night
                lights.append((b.X - b.side * 0.8, 2.0, (max(b.z0, NEAR) + b.z1) / 2, 0.35, 0.75, 1.0, 3.0, 0.06))
    emit = None
    if want_color:
        emit = cv2.extractChannel(albedo, 3).astype(np.uint8, copy=False)
        cv2.insertChannel(np.zeros((H, W), dt), albedo, 3)
    if blds:            # building pixels: xb != 0 (a facade is never the plane X = 0 of the camera)
        bmask = cv2.compare(xb, 0.0, cv2.CMP_NE)
        ids[bmask.view(bool)] = BUILDING
        cols = np.arange(W, dtype=np.float32) + 0.5 - np.float32(cam.cx)
        cols[np.abs(cols) < 1e-3] = 1e-3
        xb *= (np.float32(cam.f) / cols)[None, :]
        cv2.max(xb, NEAR, dst=xb)
        cv2.min(xb, SKY_DEPTH, dst=xb)
        cv2.copyTo(xb, bmask, depth)
    return albedo, depth, ids, emit, lights


def _windows(cam, blds, seed):
    """Window quads of all buildings (fixed-point, grouped by building in ``blds`` order),
    the building index of each, and its night state (0 dark, 1 warm, 2 cool light).
    Windows less than ~1.5 px tall are not drawn; shop fronts (wide ground-floor windows)
    are always lit.  A building's windows are its ``nf`` floors times ``len(zc)`` columns,
    floor-major; all buildings are laid out at once (one index array, no per-building
    numpy work beyond the column positions).  Windows wholly outside the image are left out
    (after their night state is drawn, so the states do not depend on the image size)."""
    zcs, ks, nfs = [], [], []
    for k, b in enumerate(blds):
        z_end = min(b.z1 - b.win_w * 0.5, cam.f * b.win_h / 1.5)
        zc = np.arange(max(b.z0, NEAR) + b.col_step * 0.5, z_end, b.col_step)
        nf = int(np.ceil((b.h - b.win_h - 1.2) / b.floor))
        if len(zc) and nf > 0:
            zcs.append(zc)
            ks.append(k)
            nfs.append(nf)
    if not zcs:
        return np.zeros((0, 4, 2), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8)
    ncol = np.array([len(z) for z in zcs])
    nf = np.array(nfs)
    n = ncol * nf                                              # windows per building
    first = np.cumsum(n) - n
    col0 = np.cumsum(ncol) - ncol
    bk = np.repeat(np.arange(len(ks)), n)                      # row in ks of every window
    local = np.arange(n.sum()) - first[bk]
    fl = local // ncol[bk]                                     # floor, then column
    Z = np.concatenate(zcs)[col0[bk] + local % ncol[bk]]
    prop = np.array([(blds[k].floor, blds[k].win_w, blds[k].win_h, blds[k].X, blds[k].lit, blds[k].shop)
                     for k in ks], np.float64)[bk]
    floor, win_w, win_h, X, lit_p, shop = prop.T
    g = (fl == 0) & (shop > 0)
    V = 0.9 + fl * floor
    hw = np.where(g, win_w * 0.9, win_w * 0.5)
    wh = np.where(g, win_h * 1.5, win_h)
    z0, z1, v1 = Z - hw, Z + hw, V + wh
    rng = np.random.default_rng(seed)
    u = rng.random((2, len(Z)))
    lit = (u[0] < lit_p) | g
    state = np.where(lit, np.where(u[1] < 0.7, 1, 2), 0).astype(np.int8)
    # the quads (z0, V), (z1, V), (z1, v1), (z0, v1) projected as Camera.project does, fixed point:
    # vertical sides, so 2 distinct x and 4 distinct y per window
    f, X = cam.f, X.astype(np.float64)
    x0, x1 = (_fix(cam.cx + f * X / z) for z in (z0, z1))
    ya, yb, yc, yd = (_fix(cam.horizon + f * (cam.cam_h - v) / z) for v, z in ((V, z0), (V, z1), (v1, z1), (v1, z0)))
    q = np.stack([x0, ya, x1, yb, x1, yc, x0, yd], 1).reshape(-1, 4, 2)
    lo_x, hi_x = np.minimum(x0, x1) >> SHIFT, np.maximum(x0, x1) >> SHIFT
    lo_y = np.minimum(np.minimum(ya, yb), np.minimum(yc, yd)) >> SHIFT
    hi_y = np.maximum(np.maximum(ya, yb), np.maximum(yc, yd)) >> SHIFT
    seen = (hi_x >= -1) & (hi_y >= -1) & (lo_x <= cam.width) & (lo_y <= cam.height)   # 1 px margin
    return q[seen], np.asarray(ks)[bk][seen], state[seen]


# ---------------------------------------------------------------- objects

def _layout(things, cam):
    """Lay out every object's primitives (:mod:`.shapes`, at s = f/Z px per metre, anchored
    at its projected ground point) in one pass: one affine transform, one bounding box per
    object and one fixed-point rounding for all points of the scene.  Per object: the
    anchor (bx, by), the sprite origin (ox, oy) and size (sw, sh) — the primitives' extent
    plus a margin of 1 px and half the thickest line, so a sprite never clips its object —,
    the fixed points relative to the origin and the draw list (kind, start, end, thickness
    or fixed radii, albedo, emissive) indexing them; the same points in image coordinates."""
    f, cx, hor, ch_m = cam.f, cam.cx, cam.horizon, cam.cam_h
    flat, metas, counts, par = [], [], [], []           # flat: every (u, v) of the scene
    for t in things:
        s = f / t.Z
        meta, i, thick = [], 0, 0
        for kind, g, alb, em in SHAPES[t.kind](t.p, t.view, s):
            if kind != "E" and kind != "R":
                pts = g if kind != "L" else g[0]
                th = 0 if kind != "L" else max(1, int(round(g[1] * s)))
                flat.extend(pts.tolist() if isinstance(pts, np.ndarray) else pts)
                meta.append((kind, i, i + len(pts), th, alb, em))
                i += len(pts)
                thick = max(thick, th)
            else:
                cu, cv, ru, rv = g[:4]
                h = g[4] / 2 if kind == "R" else 0.0
                flat.extend(((cu, cv), (cu - ru - h, cv - rv - h), (cu + ru + h, cv + rv + h)))
                r = (max(int(ru * s * _ONE + 0.5), _ONE // 2), max(int(rv * s * _ONE + 0.5), _ONE // 2))
                meta.append((kind, i, i + 3, (max(1, int(round(g[4] * s))) if kind == "R" else -1, r), alb, em))
                i += 3
        metas.append(meta)
        counts.append(i)
        par.append((s, -s, cx + t.X * s, hor + (ch_m - t.Y) * s, 1 + thick / 2))
    if not things:
        return []
    n = np.array(counts)
    start = np.cumsum(n) - n
    par = np.array(par)
    per_pt = np.repeat(par, n, axis=0)
    pts = np.fromiter(chain.from_iterable(flat), np.float32, 2 * len(flat)).reshape(-1, 2).astype(np.float64)
    pts *= per_pt[:, :2]
    pts += per_pt[:, 2:4]
    lo = np.minimum.reduceat(pts, start) - par[:, 4:]
    hi = np.maximum.reduceat(pts, start) + par[:, 4:]
    origin = np.floor(lo).astype(np.int64)
    size = np.ceil(hi).astype(np.int64) + 1 - origin
    o = np.repeat(origin, n, axis=0)
    fixed = np.round((pts - o) * _ONE).astype(np.int32)
    absolute = fixed + (o << SHIFT).astype(np.int32)
    anchor, origin, size = par[:, 2:4].tolist(), origin.tolist(), size.tolist()
    start, end = start.tolist(), (start + n).tolist()
    return [(*anchor[k], *origin[k], *size[k], fixed[start[k]:end[k]], absolute[start[k]:end[k]], metas[k])
            for k in range(len(things))]


def _paint(img, fixed, meta, ident, emit=None, owner=None, palette=None):
    """Draw an object's primitives into ``img``: (albedo, ``ident``) into a 4-channel canvas,
    ``ident`` alone into a 1-channel one; from its first emissive primitive on also the
    radiance's index into ``emit`` (0 for the rest: later primitives of the same object
    cover its lights; new radiances get the next index in the dict ``palette``) and
    ``ident`` into ``owner``."""
    lit, rgb = False, img.ndim == 3
    for kind, a, b, th, alb, em in meta:
        q = fixed[a:b]
        c = (*alb, ident) if rgb else ident
        lit = lit or (emit is not None and em is not None)
        if lit:
            e = 0 if em is None else palette.setdefault(em, FIRST_LIGHT + len(palette))
        for dst, col in ((img, c), (emit, e), (owner, ident)) if lit else ((img, c),):
            if kind == "P":
                cv2.fillPoly(dst, [q], col, cv2.LINE_8, SHIFT)
            elif kind == "M":                            # disjoint quadrilaterals: one call
                cv2.fillPoly(dst, q.reshape(-1, 4, 2), col, cv2.LINE_8, SHIFT)
            elif kind == "L":
                cv2.polylines(dst, [q], False, col, th, cv2.LINE_8, SHIFT)
            else:
                cv2.ellipse(dst, (int(q[0, 0]), int(q[0, 1])), th[1], 0, 0, 360, col, th[0], cv2.LINE_8, SHIFT)


def _id_channel(img):
    """The object-id channel of an object canvas (4-channel: the fourth; else the image)."""
    return cv2.extractChannel(img, 3) if img.ndim == 3 else img


def rasterize(scene: Scene, width: int, height: int, color: bool = True) -> Layers:
    """Draw ``scene`` at ``width`` x ``height``.  ``color=False`` draws only what the labels
    need (object masks and the building depth test): several times faster.

    Objects are painted far to near straight into the background's canvas: BGR albedo plus
    the object's index + 1 as a fourth channel (the id channel alone without colour), and
    emissive primitives into ``emit`` with the index of the object that lit the pixel in
    ``owner`` (a nearer object covers a farther one's lights: emission is kept where the
    owner is the object seen).  ids and depth of the objects are laid over the background
    once at the end, from the id channel through a table.  Two kinds of object are drawn
    as a sprite first and copied: cross traffic, which a corner building may hide (copied
    where the building is not nearer), and objects cut by the image border (OpenCV clips a
    primitive's edges at the border slightly differently from drawing it whole, and the
    sprite gives the whole silhouette).  The silhouette area of an object (for
    :data:`MIN_VISIBLE`) is counted on the canvas right after it is drawn, or on its sprite.
    Drawing straight into the canvas gives the same pixels as the sprite would (integer
    translation of fixed-point vertices), so the layers are those of a sprite per object."""
    cam = Camera.of(scene, width, height)
    W, H = width, height
    things = [t for t in scene.things if t.Z > NEAR]
    order = sorted(range(len(things)), key=lambda i: (-things[i].Z, things[i].order))
    dt = np.uint8 if len(things) < 255 else np.uint16          # the id channel holds index + 1
    canvas, depth, ids, emit, lights = _background(scene, cam, color, dt)
    shadows = []
    canvas = canvas if color else np.zeros((H, W), dt)
    owner = np.zeros((H, W), dt) if color else None
    full_area = [0] * len(things)
    extent = [(0, 0, 0, 0)] * len(things)                     # clipped sprite rectangles
    ztab = np.zeros(max(len(things) + 1, 256), np.float32)     # 256: a cv2.LUT table for 8-bit ids
    palette = {}                                              # object light radiance -> emit index
    layout = _layout(things, cam)
    # only objects beyond a facade plane (cross traffic) can be hidden by a building
    facade_l = max((b.X for b in scene.buildings if b.side < 0), default=-np.inf)
    facade_r = min((b.X for b in scene.buildings if b.side > 0), default=np.inf)
    for i in order:
        t = things[i]
        bx, by, ox, oy, sw, sh, fixed, absolute, meta = layout[i]
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + sw, W), min(oy + sh, H)
        if x0 >= x1 or y0 >= y1 or sw > 8 * W or sh > 8 * H:
            continue
        ident = i + 1
        reg = (slice(y0, y1), slice(x0, x1))
        inside = x0 == ox and y0 == oy and x1 == ox + sw and y1 == oy + sh
        occludable = not facade_l < t.X < facade_r   # corner buildings hide cross traffic
        if occludable or not inside:                 # (OpenCV clips differently than a sprite does)
            spr = np.zeros((sh, sw) + canvas.shape[2:], dt)
            spe = np.zeros((sh, sw), np.uint8) if color else None
            spo = np.zeros((sh, sw), dt) if color else None
            _paint(spr, fixed, meta, ident, spe, spo, palette)
            mask = cv2.compare(_id_channel(spr), 0, cv2.CMP_GT)
            full_area[i] = cv2.countNonZero(mask)
            m = mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            if occludable:
                m = m & ~((_id_channel(canvas[reg]) == 0) & (ids[reg] == BUILDING) & (depth[reg] < t.Z)).view(np.uint8)
            canvas[reg] = cv2.copyTo(spr[y0 - oy:y1 - oy, x0 - ox:x1 - ox], m, canvas[reg])
            if color:
                emit[reg] = cv2.copyTo(spe[y0 - oy:y1 - oy, x0 - ox:x1 - ox], m, emit[reg])
                owner[reg] = cv2.copyTo(spo[y0 - oy:y1 - oy, x0 - ox:x1 - ox], m, owner[reg])
        else:
            _paint(canvas, absolute, meta, ident, emit, owner, palette)
            if t.cls >= 0:
                full_area[i] = cv2.countNonZero(cv2.compare(_id_channel(canvas[reg]), ident, cv2.CMP_EQ))
        ztab[ident] = t.Z
        extent[i] = (x0, y0, x1, y1)
        if color:
            if t.cls >= 0 and t.kind not in ("traffic_light", "traffic_sign"):   # sun shadow on the ground
                w = sw * (0.55 if t.view.startswith("side") else 0.6)
                shadows.append((int(bx * _ONE), int(by * _ONE), int(w * _ONE), int(max(1.0, 0.25 * w) * _ONE)))
            if t.kind == "lamp" and t.p["light"] is not None:
                c = scene.lamp_light
                lights.append((t.X + t.p["arm"], t.p["top"], t.Z, c[0] / 255, c[1] / 255, c[2] / 255, 6.0, 0.12))
            elif t.kind in ("car", "truck", "bus") and t.view == "front":    # oncoming head lights
                lights.append((t.X, 0.7, t.Z - 4.0, 1.0, 0.97, 0.9, 3.0, 0.08))
            elif t.kind == "bus" and t.p["interior"] is not None:
                lights.append((t.X, 1.5, t.Z, 0.6, 0.85, 0.95, 2.0, 0.03))

    # lay the object layers over the background
    obj_id = _id_channel(canvas)
    obj = cv2.compare(obj_id, 0, cv2.CMP_GT)
    cv2.add(obj_id, FIRST_OBJECT - 1, dst=ids, mask=obj, dtype=cv2.CV_16S)
    if dt == np.uint8:
        cv2.copyTo(cv2.LUT(obj_id, ztab), obj, depth)
    else:
        cv2.copyTo(ztab[obj_id], obj, depth)
    albedo = table = None
    if color:
        albedo = cv2.cvtColor(canvas, cv2.COLOR_BGRA2BGR).astype(np.uint8, copy=False)
        # a light is seen where the object that drew it is seen: objects cover the windows
        # and the lights of farther objects (owner 0 and object 0 on the background)
        cv2.bitwise_and(emit, cv2.compare(obj_id, owner, cv2.CMP_EQ), dst=emit)
        if FIRST_LIGHT + len(palette) > 256:
            raise DarknetKDError(f"DriveSim scene with {len(palette)} light colours; at most {256 - FIRST_LIGHT}")
        table = np.zeros((256, 1, 3), np.float32)
        table[:FIRST_LIGHT, 0] = WINDOW_LIGHT
        for em, k in palette.items():
            table[k, 0] = em

    labels, boxes, vis = [], [], []
    dropped = 0
    for i, (t, area, (x0, y0, x1, y1)) in enumerate(zip(things, full_area, extent)):
        if t.cls < 0 or area == 0:
            continue
        own = (obj_id[y0:y1, x0:x1] == i + 1).view(np.uint8)
        n = cv2.countNonZero(own)
        frac = n / area
        if n == 0 or frac < MIN_VISIBLE:
            dropped += 1
            continue
        bx, by, bw, bh = cv2.boundingRect(own)
        bx0, bx1, by0, by1 = x0 + bx, x0 + bx + bw, y0 + by, y0 + by + bh
        if min(bx1 - bx0, by1 - by0) < MIN_BOX_PX or (bx1 - bx0) * (by1 - by0) < MIN_BOX_AREA:
            dropped += 1
            continue
        labels.append((t.cls, (bx0 + bx1) / 2 / W, (by0 + by1) / 2 / H, (bx1 - bx0) / W, (by1 - by0) / H))
        boxes.append((bx0, by0, bx1, by1))
        vis.append(frac)
    lights = np.asarray(lights, np.float32).reshape(-1, 8)
    lin = linear_albedo(albedo, scene.grain) if color else None
    shadows = np.asarray(shadows, np.int32).reshape(-1, 4) if color else None
    return Layers(cam, albedo, lin, emit, table, depth, ids, shadows, lights,
                  np.asarray(labels, np.float32).reshape(-1, 5), np.asarray(boxes, np.int32).reshape(-1, 4),
                  np.asarray(vis, np.float32), dropped)
