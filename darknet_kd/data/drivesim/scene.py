"""DriveSim scenes: a street seen from a car, sampled in metres from one seed.

World frame: the camera sits at ``X = 0`` (lateral, metres, right positive), height
``cam_h`` above the ground, looking down the street (``Z`` forward).  A point
``(X, Y, Z)`` (``Y`` up) projects to pixel ``x = cx + f·X/Z``, ``y = horizon + f·(cam_h − Y)/Z``
with ``f = fx·width``, ``cx = (0.5 + yaw)·width`` and ``horizon = hy·height``.  A scene is
resolution independent: the same seed renders the same street at any size.

A scene has a *style* (the country the street is in: palettes, sign and traffic-light
designs, class frequencies); the *domain* (day, night, fog, rain) only changes how it is
lit and imaged (:mod:`.domains`).  DriveSim's target domain uses the ``target`` style, so a
day→night translation of source images does not produce target-looking objects.
"""
from __future__ import annotations

import math
from itertools import islice
from dataclasses import dataclass, field

import numpy as np

from .shapes import POLE

CLASSES = ("car", "truck", "bus", "person", "bicycle", "traffic_light", "traffic_sign")
CLS = {n: i for i, n in enumerate(CLASSES)}


@dataclass
class Thing:
    """One object: ``kind`` is a key of :data:`shapes.SHAPES`; ``cls`` its class id or -1
    (poles, lamps, trees: drawn, never labelled).  ``(X, Y, Z)`` is its anchor in metres.
    ``order`` breaks depth ties (a housing is drawn after its pole, a rider after the bike)."""

    kind: str
    cls: int
    X: float
    Z: float
    Y: float = 0.0
    view: str = "rear"
    p: dict = field(default_factory=dict)
    order: float = 0.0


@dataclass
class Building:
    side: int            # -1 left, +1 right
    X: float             # facade plane (signed)
    z0: float
    z1: float
    h: float
    color: tuple
    window: tuple        # window glass albedo
    floor: float         # floor height
    col_step: float      # window spacing along the street
    win_w: float
    win_h: float
    lit: float           # fraction of windows lit at night
    shop: bool           # lit ground-floor shop front at night


@dataclass
class Scene:
    style: str
    fx: float
    hy: float
    yaw: float
    cam_h: float
    road_l: float                 # left road edge X (negative)
    road_r: float
    walk_l: float                 # outer edge of the left sidewalk (negative)
    walk_r: float
    lane_lines: list              # (X, kind) kind: "dash", "solid", "double"
    crosswalk: tuple | None       # (z0, z1)
    intersection: tuple | None    # (z0, z1) cross street
    buildings: list
    things: list
    colors: dict                  # road, walk, curb, marking, sky_top, sky_horizon
    lamp_light: tuple             # night radiance of street lamps (BGR)
    light_state: int              # 0 red, 1 yellow, 2 green for every traffic light facing us
    grain: tuple                  # offset of the surface grain crop (fractions)
    lit_seed: int                 # which windows are lit at night


# ---------------------------------------------------------------- styles

def _hex(*cs):
    return [tuple(int(h[i:i + 2], 16) for i in (4, 2, 0)) for h in cs]   # "RRGGBB" -> BGR


STYLES = {
    # a European-looking city in summer
    "source": dict(
        car_colors=_hex("c0c4c8", "e8e8e8", "202020", "1f3f8f", "b01818", "6c7a80", "2e6b34", "d8b020", "8a5a2b"),
        car_p=[0.16, 0.16, 0.14, 0.12, 0.12, 0.12, 0.06, 0.06, 0.06],
        truck_colors=_hex("f0f0f0", "d0d4d8", "2a5ca8", "b03020"), cab_colors=_hex("e8e8e8", "1f3f8f", "b01818"),
        bus_colors=_hex("c81e1e", "e6e6e6", "1e5ab4"), bus_stripes=_hex("f0f0f0", "1e5ab4", "f0c000"),
        bus_double=0.0,
        vehicle_p=(0.82, 0.09, 0.09),             # car, truck, bus
        signs=("circle_red", "triangle_red", "octagon", "blue_round", "rect_blue"),
        light_layout="vertical", housings=_hex("1c1c1c", "2a3a2a"), backplate=None,
        clothes=_hex("d02020", "2040c0", "f0f0f0", "20a040", "f0c020", "303030", "a0a0a0", "e07020"),
        pants=_hex("283c64", "303030", "8c7a5a", "202020", "5a5a5a"),
        building_colors=_hex("c8b49a", "b0a090", "d8d0c0", "9a7860", "bfc4c8", "a8584a", "e0d8b8"),
        density=dict(person=5.0, bicycle=1.2, sign=3.0, tree=0.4),
        lamp_light=((120, 200, 255), (255, 240, 225)), lamp_p=(0.3, 0.7),
    ),
    # another country: other paint, yellow horizontal lights, diamond signs, double deckers,
    # more pedestrians and cyclists, fewer buses
    "target": dict(
        car_colors=_hex("f4f4f4", "404850", "1a1a1a", "f0c419", "5b6e8c", "7a1f2b", "b4b8a8", "3a5a40"),
        car_p=[0.2, 0.16, 0.18, 0.1, 0.1, 0.08, 0.1, 0.08],
        truck_colors=_hex("e0b040", "f4f4f4", "2f6a3a", "8c8c8c"), cab_colors=_hex("2f6a3a", "f4f4f4", "c02828"),
        bus_colors=_hex("f2c200", "2f8a3a", "f4f4f4"), bus_stripes=_hex("202020", "f4f4f4", "c02828"),
        bus_double=0.5,
        vehicle_p=(0.76, 0.16, 0.08),
        signs=("diamond_yellow", "rect_white", "octagon", "circle_red", "rect_green"),
        light_layout="horizontal", housings=_hex("e6c030", "303030"), backplate=_hex("202020")[0],
        clothes=_hex("303a4a", "6a2a2a", "c8c8c8", "2a4a3a", "4a4a4a", "e0a040", "603060"),
        pants=_hex("202830", "403830", "606060", "101010"),
        building_colors=_hex("8a8078", "6a6258", "a89880", "5a5a60", "b8a888", "704838"),
        density=dict(person=8.0, bicycle=2.5, sign=2.5, tree=0.25),
        lamp_light=((110, 190, 255), (255, 235, 215)), lamp_p=(0.65, 0.35),
    ),
}
SKINS = _hex("f2d2b6", "d9a679", "a8744f", "6b4226", "e8c0a0")
HAIR = _hex("2a1a10", "101010", "704020", "c0a060", "909090")


class Draws:
    """Scalar random draws for :func:`sample_scene`, taken from a numpy Generator in blocks
    of uniforms: the per-call overhead of Generator methods, not the arithmetic, dominated
    scene sampling.  A pure function of the generator's state, like the Generator itself.
    Poisson by inversion, exponential by -log(1-u), integer-shape gamma as a sum of
    exponentials."""

    def __init__(self, rng: np.random.Generator, block: int = 256):
        self._rng, self._block = rng, block
        self._next = iter(()).__next__                  # the current block's iterator

    def random(self, size=None):
        if size is not None:
            n = math.prod(size) if isinstance(size, tuple) else int(size)
            vals = list(islice(self._next.__self__, n))          # the rest of the block, then new ones
            while len(vals) < n:
                self._next = iter(self._rng.random(self._block).tolist()).__next__
                vals += islice(self._next.__self__, n - len(vals))
            return np.array(vals).reshape(size)
        try:
            return self._next()
        except StopIteration:
            self._next = iter(self._rng.random(self._block).tolist()).__next__
            return self._next()

    def uniform(self, lo=0.0, hi=1.0):
        try:
            u = self._next()
        except StopIteration:
            u = self.random()
        return lo + (hi - lo) * u

    def integers(self, lo, hi=None):
        lo, hi = (0, lo) if hi is None else (lo, hi)
        return lo + min(int(self.random() * (hi - lo)), hi - lo - 1)

    def exponential(self, scale=1.0):
        return -scale * math.log(1.0 - self.random())

    def gamma(self, shape: int, scale=1.0):
        return sum(self.exponential(scale) for _ in range(int(shape)))

    def poisson(self, lam):
        u, k, p = self.random(), 0, math.exp(-lam)
        cdf = p
        while u > cdf and k < 1000:
            k += 1
            p *= lam / k
            cdf += p
        return k


def _pick(rng, seq, p=None):
    """One element of ``seq`` (uniformly, or with probabilities ``p``): one draw from ``rng``."""
    u = rng.random()
    if p is None:
        return seq[min(int(u * len(seq)), len(seq) - 1)]
    u *= sum(p)
    for x, w in zip(seq, p):
        if u < w:
            return x
        u -= w
    return seq[-1]


def _jitter(rng, c, k=12):
    """Colour ``c`` with every channel moved by up to ±k."""
    r, n = rng.random, 2 * k + 1
    b, g, red = c[0] + int(r() * n) - k, c[1] + int(r() * n) - k, c[2] + int(r() * n) - k
    return (0 if b < 0 else 255 if b > 255 else b, 0 if g < 0 else 255 if g > 255 else g,
            0 if red < 0 else 255 if red > 255 else red)


# ---------------------------------------------------------------- objects

def _vehicle(rng, st, cls_name, X, Z, view):
    if cls_name == "car":
        p = dict(w=rng.uniform(1.65, 1.95), h=rng.uniform(1.35, 1.75), length=rng.uniform(3.8, 4.9),
                 color=_jitter(rng, _pick(rng, st["car_colors"], st["car_p"])),
                 glass=_jitter(rng, (70, 60, 50), 15), plate=(230, 230, 230) if st is STYLES["source"] else (40, 200, 240))
    elif cls_name == "truck":
        p = dict(w=rng.uniform(2.3, 2.55), h=rng.uniform(3.0, 3.9), length=rng.uniform(7.0, 11.0),
                 color=_jitter(rng, _pick(rng, st["truck_colors"])), cab=_jitter(rng, _pick(rng, st["cab_colors"])),
                 glass=(70, 60, 50))
    else:
        double = rng.random() < st["bus_double"]
        p = dict(w=2.5, h=4.3 if double else rng.uniform(2.9, 3.3), length=rng.uniform(10.5, 12.5),
                 color=_jitter(rng, _pick(rng, st["bus_colors"]), 8), stripe=_pick(rng, st["bus_stripes"]),
                 glass=(60, 55, 45), ad=_jitter(rng, (80, 160, 200), 60), double=double,
                 interior=(45, 70, 80) if rng.random() < 0.8 else None)
    return Thing(cls_name, CLS[cls_name], X, Z, 0.0, view, p)


def _person(rng, st, X, Z, view):
    p = dict(h=rng.uniform(1.5, 1.92), shirt=_jitter(rng, _pick(rng, st["clothes"])),
             pants=_jitter(rng, _pick(rng, st["pants"])), skin=_pick(rng, SKINS), hair=_pick(rng, HAIR),
             stride=rng.uniform(0.0, 0.3) if view == "side" else 0.0, dress=rng.random() < 0.15,
             bag=_jitter(rng, (40, 60, 90), 30) if rng.random() < 0.3 else None)
    return Thing("person", CLS["person"], X, Z, 0.0, view, p)


def _bicycle(rng, X, Z, view):
    p = dict(color=_jitter(rng, _pick(rng, _hex("c02020", "202020", "2050c0", "e0e0e0", "30a050")), 20),
             r=rng.uniform(0.31, 0.36), lamp=rng.random() < 0.5)
    return Thing("bicycle", CLS["bicycle"], X, Z, 0.0, view, p)


def _light(rng, st, X, Z, Y, state, arm=0.0):
    """A traffic light housing on a pole (the pole is an unlabelled thing drawn first)."""
    layout = st["light_layout"]
    h = 1.15 if layout == "vertical" else 0.45
    p = dict(layout=layout, housing=_pick(rng, st["housings"]), state=state, backplate=st["backplate"])
    t = [Thing("traffic_light", CLS["traffic_light"], X + arm, Z, Y, "front", p, order=1)]
    t.append(Thing("pole", -1, X, Z + 0.05, 0.0, "front", dict(top=Y + h * (0.5 if not arm else 1.05), w=0.14,
                                                                  color=POLE, arm=arm)))
    return t



def _sign(rng, st, X, Z):
    kind = _pick(rng, st["signs"])
    if kind == "rect_green":
        p = dict(kind=kind, size=1.0, w=rng.uniform(1.6, 3.0), hh=rng.uniform(0.9, 1.4))
        Y = rng.uniform(2.3, 3.0)
    else:
        p = dict(kind=kind, size=rng.uniform(0.6, 0.9))
        Y = rng.uniform(1.9, 2.6)
    return [Thing("traffic_sign", CLS["traffic_sign"], X, Z, Y, "front", p, order=1),
            Thing("pole", -1, X, Z + 0.05, 0.0, "front", dict(top=Y + 0.3, w=0.07, color=POLE))]


# ---------------------------------------------------------------- the street

def sample_scene(rng: np.random.Generator, style: str = "source") -> Scene:
    """Draw one street scene.  All randomness comes from ``rng`` in a fixed order."""
    rng = rng if isinstance(rng, Draws) else Draws(rng)
    st = STYLES[style]
    fx, hy, yaw, cam_h = rng.uniform(0.95, 1.25), rng.uniform(0.4, 0.5), rng.uniform(-0.07, 0.07), rng.uniform(1.25, 1.6)
    lane_w = rng.uniform(3.0, 3.6)
    n_fwd = int(rng.integers(1, 3))
    n_opp = _pick(rng, (0, 1, 1, 2))
    ego = int(rng.integers(n_fwd))                        # ego lane, 0 = rightmost
    park_r = 2.3 if rng.random() < 0.6 else 0.0
    park_l = 2.3 if rng.random() < 0.35 else 0.0
    bike_lane = 1.6 if rng.random() < 0.3 else 0.0
    road_r = (ego + 0.5) * lane_w + park_r + bike_lane
    road_l = (ego - n_fwd - n_opp + 0.5) * lane_w - park_l
    walk_r = road_r + rng.uniform(2.5, 5.0)
    walk_l = road_l - rng.uniform(2.5, 5.0)
    fwd = [(ego - k) * lane_w for k in range(n_fwd)]
    opp = [(ego - n_fwd - k) * lane_w for k in range(n_opp)]
    lines = [((ego - k - 0.5) * lane_w, "dash") for k in range(n_fwd - 1)]
    lines += [((ego - n_fwd - k - 0.5) * lane_w, "dash") for k in range(n_opp - 1)]
    if n_opp:
        lines.append(((ego - n_fwd + 0.5) * lane_w, "double"))
    lines.append(((ego + 0.5) * lane_w, "solid"))
    if n_opp == 0 or park_l:
        lines.append((road_l + park_l, "solid"))
    if bike_lane:
        lines.append(((ego + 0.5) * lane_w + bike_lane, "solid"))

    inter = None
    if rng.random() < 0.45:
        z0 = rng.uniform(12, 45)
        inter = (z0, z0 + rng.uniform(10, 16))
    crosswalk = (inter[0] - 4.0, inter[0] - 0.5) if inter else ((lambda z: (z, z + 3.5))(rng.uniform(12, 40))
                                                                if rng.random() < 0.25 else None)
    colors = dict(road=_jitter(rng, (78, 78, 80), 14), walk=_jitter(rng, (150, 155, 160), 18),
                  curb=(175, 178, 180), marking=(225, 228, 230) if style == "source" else (220, 225, 230),
                  median=(40, 190, 230) if style == "target" else (225, 228, 230),
                  sky_top=_jitter(rng, (210, 140, 80), 20), sky_horizon=_jitter(rng, (240, 215, 195), 12))

    # buildings: facade segments along both sides
    buildings = []
    tall = rng.uniform(0.4, 1.6)                         # downtown factor
    for side, edge in ((-1, walk_l), (1, walk_r)):
        z = rng.uniform(0.0, 6.0)
        while z < 260:
            length = rng.uniform(8, 30)
            z1 = z + length
            if inter and z1 > inter[0] and z < inter[1]:     # the cross street
                z, z1 = inter[1] + rng.uniform(0, 3), None
                continue
            if rng.random() < 0.08:                           # a gap (parking lot)
                z = z1
                continue
            floor = rng.uniform(2.9, 3.6)
            buildings.append(Building(
                side=side, X=edge + side * rng.uniform(0.0, 2.5), z0=z, z1=z1,
                h=min(60.0, rng.gamma(3.0, 5.0) * tall + 5),
                color=_jitter(rng, _pick(rng, st["building_colors"]), 15),
                window=_jitter(rng, (95, 80, 60), 25), floor=floor, col_step=rng.uniform(2.4, 4.2),
                win_w=rng.uniform(0.9, 1.6), win_h=rng.uniform(1.1, 1.7), lit=rng.uniform(0.05, 0.6),
                shop=rng.random() < 0.4))
            z = z1

    things: list[Thing] = []
    traffic = rng.uniform(0.3, 1.4)                     # scene traffic density
    vp = st["vehicle_p"]

    def lane_traffic(X, view, start, mean_gap, jitter=0.25):
        z = start
        while True:
            z += rng.exponential(mean_gap / traffic)
            if z > 100:
                return
            c = _pick(rng, CLASSES[:3], vp)
            t = _vehicle(rng, st, c, X + rng.uniform(-jitter, jitter), z, view)
            things.append(t)
            z += t.p["length"] + 1.5

    for X in fwd:
        lane_traffic(X, "rear", 4.0 if X else 6.0, 22.0)
    for X in opp:
        lane_traffic(X, "front", 3.0, 26.0)
    if park_r:
        lane_traffic(road_r - bike_lane - 1.15, "rear", 2.0, 9.0, 0.1)
    if park_l:
        lane_traffic(road_l + 1.15, "front", 2.0, 10.0, 0.1)
    if inter:                                            # cross traffic, seen side-on
        for _ in range(rng.poisson(1.5 * traffic)):
            c = _pick(rng, CLASSES[:3], vp)
            things.append(_vehicle(rng, st, c, rng.uniform(road_l - 15, road_r + 15),
                                   rng.uniform(inter[0] + 2, inter[1] - 2), _pick(rng, ("side_l", "side_r"))))

    # pedestrians and cyclists
    dens = st["density"]
    crowd = rng.uniform(0.3, 1.7)
    for _ in range(rng.poisson(dens["person"] * crowd)):
        side = rng.random() < 0.55
        X = rng.uniform(road_r + 0.4, walk_r - 0.3) if side else rng.uniform(walk_l + 0.3, road_l - 0.4)
        things.append(_person(rng, st, X, rng.uniform(3.0, 55.0), _pick(rng, ("front", "back", "side", "side"))))
    if crosswalk:
        for _ in range(rng.poisson(1.5 * crowd)):
            things.append(_person(rng, st, rng.uniform(road_l, road_r), rng.uniform(*crosswalk), "side"))
    for _ in range(rng.poisson(dens["bicycle"] * crowd)):
        r = rng.random()
        Z = rng.uniform(4.0, 45.0)
        if r < 0.45:                                     # ridden along the road edge, rider on top
            X = road_r - (bike_lane / 2 if bike_lane else rng.uniform(0.5, 1.0))
            view = _pick(rng, ("rear", "rear", "side"))
            things.append(_bicycle(rng, X, Z, view))
            rider = _person(rng, st, X, Z, "back" if view == "rear" else "side")
            rider.Y, rider.order = 0.42, 1
            rider.p["h"] *= 0.85
            things.append(rider)
        else:                                            # parked on the sidewalk
            X = rng.uniform(road_r + 0.5, walk_r - 0.3) if r < 0.8 else rng.uniform(walk_l + 0.3, road_l - 0.5)
            things.append(_bicycle(rng, X, Z, "side"))

    # traffic lights: at the intersection, or at a pedestrian crossing
    state = _pick(rng, (0, 1, 2), (0.45, 0.1, 0.45))
    if inter or (crosswalk and rng.random() < 0.5):
        z_near = inter[0] - 1.0 if inter else crosswalk[0] - 0.5
        y = rng.uniform(2.4, 3.2)
        things += _light(rng, st, road_r + 0.5, z_near, y, state)
        if rng.random() < 0.7:
            things += _light(rng, st, road_l - 0.5, z_near, y, state)
        if inter:
            y2 = rng.uniform(5.0, 6.0)
            for X in fwd[:1] + fwd[1:] * (rng.random() < 0.5):
                if rng.random() < 0.6:
                    things += _light(rng, st, road_r + 0.5, inter[1] + 1.0, y2, state, arm=X - road_r - 0.5)
            things += _light(rng, st, road_r + 0.5, inter[1] + 1.0, y, state)
            if rng.random() < 0.6:
                things += _light(rng, st, road_l - 0.5, inter[1] + 1.0, y, state)
    # traffic signs along the kerbs
    for _ in range(rng.poisson(dens["sign"])):
        side = rng.random() < 0.65
        things += _sign(rng, st, (road_r + 0.45) if side else (road_l - 0.45), rng.uniform(5.0, 60.0))
    # street lamps
    lamp_light = _pick(rng, st["lamp_light"], st["lamp_p"])
    spacing = rng.uniform(22, 36)
    for side, edge in ((-1, road_l - 0.6), (1, road_r + 0.6)):
        if rng.random() < 0.15:
            continue
        z = rng.uniform(2.0, spacing)
        while z < 120:
            top = rng.uniform(7.0, 9.0)
            lit = rng.random() < 0.92
            things.append(Thing("lamp", -1, edge, z, 0.0, "front",
                                dict(top=top, arm=-side * rng.uniform(1.2, 2.2), color=(80, 84, 88),
                                     light=tuple(1.5 * c for c in lamp_light) if lit else None, lit=lit)))
            z += spacing
    # trees
    if rng.random() < dens["tree"] * 2:
        spacing_t = rng.uniform(9, 18)
        for side, lo, hi in ((-1, walk_l + 0.8, road_l - 0.8), (1, road_r + 0.8, walk_r - 0.8)):
            z = rng.uniform(3, spacing_t)
            X = rng.uniform(min(lo, hi), max(lo, hi))
            while z < 90:
                n = int(rng.integers(3, 6))
                greens = [tuple(c) for c in (np.array((50, 110, 60)) + (rng.random((n, 3)) * 51).astype(int) - 25).tolist()]
                blobs = (rng.random((n, 3)) * (1.2, 0.9, 0.35) + (-0.6, 0.0, 0.45)).tolist()
                things.append(Thing("tree", -1, X, z, 0.0, "front",
                                    dict(h=rng.uniform(4, 8), crown=rng.uniform(1.5, 2.6), blobs=blobs, greens=greens)))
                z += spacing_t * rng.uniform(0.8, 1.2)

    return Scene(style=style, fx=fx, hy=hy, yaw=yaw, cam_h=cam_h, road_l=road_l, road_r=road_r, walk_l=walk_l,
                 walk_r=walk_r, lane_lines=lines, crosswalk=crosswalk, intersection=inter, buildings=buildings,
                 things=things, colors=colors, lamp_light=lamp_light, light_state=state,
                 grain=tuple(rng.random(2).tolist()), lit_seed=int(rng.integers(1 << 31)))
