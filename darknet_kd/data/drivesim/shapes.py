"""Object sprites of DriveSim: every object is a list of flat primitives in metres.

A primitive is ``(kind, geometry, albedo, emissive)``:

* ``"P"`` polygon, geometry N ``(u, v)`` points (a list of pairs or an (N, 2) float32
  array; the layout rounds every point to float32, all points of a scene in one call);
* ``"M"`` several disjoint quadrilaterals of one colour, geometry their 4·k points: one
  fill call, the same pixels as k ``"P"`` (a symmetric pair of lamps, tires, legs, arms);
* ``"E"`` filled ellipse ``(cu, cv, ru, rv)``;
* ``"R"`` ellipse outline ``(cu, cv, ru, rv, thickness)``;
* ``"L"`` open polyline ``(points (N, 2), thickness)``.

``u`` runs to the right and ``v`` up from the object's anchor (the ground contact point
of a vehicle or person, the bottom centre of a light or sign housing).  ``albedo`` is a
BGR uint8 colour, ``emissive`` a BGR radiance (0..255 scale, may exceed 255 for bright
lamps) or None.  Objects are flat cut-outs facing the camera (the painter's model): at
street distances their own depth extent matters less than occlusion between them.

``px`` (pixels per metre at the object's distance) selects the level of detail: a car a
few pixels wide is drawn as its silhouette and lights only, which is also all a camera
would resolve.
"""
from __future__ import annotations

import numpy as np

TIRE = (28, 28, 30)
DARK = (40, 40, 44)
POLE = (95, 98, 100)
WHITE = (235, 235, 235)
BLACK = (20, 20, 20)
HEAD = (255, 250, 235)        # head-light radiance
TAIL = (40, 40, 255)          # tail-light radiance


def rect(u0, v0, u1, v1):
    return [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]


def poly(*pts):
    return list(pts)


def regular(n, r, cu=0.0, cv=0.0, phase=0.0):
    a = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([cu + r * np.sin(a), cv + r * np.cos(a)], 1).astype(np.float32)


def shade(color, k):
    """``color`` scaled by ``k`` (clipped): darker (k < 1) or lighter panels of one paint."""
    return tuple(int(min(255, c * k)) for c in color)


# ---------------------------------------------------------------- vehicles

def _lamps(u, v, w, h, albedo, emis):
    """A symmetric pair of lamps at ±u."""
    return [("M", rect(-u - w / 2, v, -u + w / 2, v + h) + rect(u - w / 2, v, u + w / 2, v + h), albedo, emis)]


def car(p, view, px):
    w, h, col, glass = p["w"], p["h"], p["color"], p["glass"]
    if view in ("rear", "front"):
        hw, belt = w / 2, h * 0.56
        front = view == "front"
        out = [("M", rect(-hw + 0.12, 0, -hw + 0.42, 0.3) + rect(hw - 0.42, 0, hw - 0.12, 0.3), TIRE, None),
               ("P", poly((-hw, 0.2), (hw, 0.2), (hw, belt - 0.06), (hw - 0.1, belt), (-hw + 0.1, belt),
                          (-hw, belt - 0.06)), col, None),
               ("P", poly((-hw * 0.92, belt), (hw * 0.92, belt), (hw * 0.7, h), (-hw * 0.7, h)), shade(col, 0.9), None)]
        if px * w >= 6:
            out.append(("P", poly((-hw * 0.8, belt + 0.05), (hw * 0.8, belt + 0.05), (hw * 0.63, h - 0.07),
                                  (-hw * 0.63, h - 0.07)), glass, None))
            out.append(("P", rect(-hw, 0.2, hw, 0.34), DARK, None))              # bumper
        if px * w >= 14:
            out.append(("P", rect(-0.26, 0.36, 0.26, 0.48), p["plate"], None))
            if front:
                out.append(("P", rect(-hw * 0.45, 0.5, hw * 0.45, belt - 0.12), DARK, None))   # grille
        if front:
            out += _lamps(hw - 0.28, belt - 0.2, 0.34, 0.13, (225, 230, 230), HEAD)
        else:
            out += _lamps(hw - 0.2, belt - 0.22, 0.26, 0.15, (40, 40, 190), TAIL)
        return out
    # side view, heading to the right when view == "side_r"
    L, sgn = p["length"], 1 if view == "side_r" else -1
    hl, belt = L / 2, h * 0.55
    r = 0.32
    out = [("P", poly((-hl, 0.22), (hl, 0.22), (hl, belt - 0.1), (hl - 0.15, belt), (-hl + 0.1, belt),
                      (-hl, belt - 0.12)), col, None)]
    cab = np.array(poly((-hl * 0.62, belt), (hl * 0.5, belt), (hl * 0.22, h), (-hl * 0.45, h)), np.float32)
    if sgn < 0:
        cab[:, 0] *= -1
    out.append(("P", cab, shade(col, 0.92), None))
    if px * L >= 10:
        win = cab.copy()
        win[:, 0] *= 0.9
        win[:, 1] = np.where(win[:, 1] > belt + 0.01, h - 0.08, belt + 0.06)
        out.append(("P", win, glass, None))
    for cu in (-hl + 0.75, hl - 0.75):
        out.append(("E", (cu, r, r, r), TIRE, None))
        if px * r >= 3:
            out.append(("E", (cu, r, r * 0.5, r * 0.5), (150, 150, 155), None))
    out.append(("P", rect(sgn * hl - 0.12, belt - 0.25, sgn * hl + 0.02 * sgn, belt - 0.1), (225, 230, 230), HEAD))
    out.append(("P", rect(-sgn * hl - 0.02 * sgn, belt - 0.25, -sgn * hl + 0.1 * sgn, belt - 0.1), (40, 40, 190), TAIL))
    return out


def truck(p, view, px):
    w, h, col, cab = p["w"], p["h"], p["color"], p["cab"]
    if view in ("rear", "front"):
        hw = w / 2
        out = [("M", rect(-hw + 0.1, 0, -hw + 0.55, 0.5) + rect(hw - 0.55, 0, hw - 0.1, 0.5), TIRE, None)]
        if view == "rear":
            out.append(("P", rect(-hw, 0.85, hw, h), col, None))
            out.append(("P", rect(-hw * 0.95, 0.35, hw * 0.95, 0.85), DARK, None))
            if px * w >= 8:
                out.append(("L", (poly((0, 0.95), (0, h - 0.1)), 0.05), shade(col, 0.6), None))
                out.append(("P", rect(-hw, 0.85, hw, 0.95), shade(col, 0.7), None))
            out += _lamps(hw - 0.2, 0.95, 0.25, 0.2, (40, 40, 190), TAIL)
        else:
            out.append(("P", rect(-hw, 0.9, hw, h), col, None))                       # box behind the cab
            out.append(("P", rect(-hw * 0.97, 0.4, hw * 0.97, h * 0.78), cab, None))
            out.append(("P", rect(-hw * 0.85, h * 0.5, hw * 0.85, h * 0.74), p["glass"], None))
            if px * w >= 8:
                out.append(("P", rect(-hw * 0.5, 0.55, hw * 0.5, 1.0), DARK, None))
            out += _lamps(hw - 0.3, 0.65, 0.35, 0.16, (225, 230, 230), HEAD)
        return out
    L, sgn = p["length"], 1 if view == "side_r" else -1
    hl, r = L / 2, 0.5
    cab_l = 2.2
    cab_u0 = hl - cab_l if sgn > 0 else -hl
    box_u0 = -hl if sgn > 0 else -hl + cab_l + 0.2
    box_u1 = hl - cab_l - 0.2 if sgn > 0 else hl
    out = [("P", rect(box_u0, 0.95, box_u1, h), col, None),
           ("P", rect(-hl, 0.6, hl, 0.95), DARK, None),
           ("P", rect(cab_u0, 0.6, cab_u0 + cab_l, h * 0.8), cab, None)]
    wu0 = cab_u0 + (cab_l * 0.45 if sgn > 0 else 0.15)
    out.append(("P", rect(wu0, h * 0.5, wu0 + cab_l * 0.4, h * 0.74), p["glass"], None))
    for cu in (sgn * (hl - 1.1), -sgn * (hl - 1.3), -sgn * (hl - 2.5)):
        out.append(("E", (cu, r, r, r), TIRE, None))
    out.append(("P", rect(sgn * hl - 0.15 * (sgn > 0), 0.7, sgn * hl + 0.15 * (sgn < 0), 0.9), (225, 230, 230), HEAD))
    out.append(("P", rect(-sgn * hl - 0.12 * (sgn < 0), 1.0, -sgn * hl + 0.12 * (sgn > 0), 1.2), (40, 40, 190), TAIL))
    return out


def bus(p, view, px):
    w, h, col, stripe, glass = p["w"], p["h"], p["color"], p["stripe"], p["glass"]
    lit = p["interior"]                       # radiance of lit windows at night
    if view in ("rear", "front"):
        hw = w / 2
        out = [("M", rect(-hw + 0.15, 0, -hw + 0.55, 0.45) + rect(hw - 0.55, 0, hw - 0.15, 0.45), TIRE, None),
               ("P", rect(-hw, 0.3, hw, h), col, None),
               ("P", rect(-hw, h * 0.3, hw, h * 0.38), stripe, None)]
        if view == "front":
            out.append(("P", rect(-hw * 0.9, h * 0.42, hw * 0.9, h * 0.86), glass, lit))
            out.append(("P", rect(-hw * 0.7, h * 0.89, hw * 0.7, h * 0.97), (20, 60, 70), (40, 190, 255)))
            out += _lamps(hw - 0.35, 0.55, 0.4, 0.16, (225, 230, 230), HEAD)
        else:
            out.append(("P", rect(-hw * 0.8, h * 0.62, hw * 0.8, h * 0.9), glass, lit))
            if px * w >= 8:
                out.append(("P", rect(-hw * 0.6, h * 0.42, hw * 0.6, h * 0.56), p["ad"], None))
            out += _lamps(hw - 0.2, 0.6, 0.25, 0.35, (40, 40, 190), TAIL)
        if p.get("double"):
            out.append(("P", rect(-hw * 0.85, h * 0.4, hw * 0.85, h * 0.52), glass, lit))
        return out
    L, sgn = p["length"], 1 if view == "side_r" else -1
    hl, r = L / 2, 0.5
    out = [("P", rect(-hl, 0.3, hl, h), col, None),
           ("P", rect(-hl, h * 0.3, hl, h * 0.38), stripe, None)]
    n = max(2, int(L / 1.6))
    us = np.linspace(-hl + 0.4, hl - 0.4, n + 1)
    rows = ((h * 0.45, h * 0.85),) if not p.get("double") else ((h * 0.2 + 0.5, h * 0.45), (h * 0.6, h * 0.88))
    for v0, v1 in rows:
        if px * L < 30:                            # far: one glass band
            out.append(("P", rect(us[0], v0, us[-1], v1), glass, lit))
        else:
            for a, b in zip(us[:-1], us[1:]):
                out.append(("P", rect(a + 0.06, v0, b - 0.06, v1), glass, lit))
    for cu in (sgn * (hl - 2.2), -sgn * (hl - 2.8)):
        out.append(("E", (cu, r, r, r), TIRE, None))
    out.append(("P", rect(sgn * hl - 0.15 * (sgn > 0), 0.5, sgn * hl + 0.15 * (sgn < 0), 0.75), (225, 230, 230), HEAD))
    return out


# ---------------------------------------------------------------- people, bicycles

def person(p, view, px):
    h, shirt, pants, skin, hair = p["h"], p["shirt"], p["pants"], p["skin"], p["hair"]
    s = h / 1.75
    stride = p["stride"] * s
    hw = 0.2 * s                                      # half shoulder width
    head_r = 0.11 * s
    leg_top, shoulder = 0.88 * s, 1.45 * s
    if view == "side":
        legs = [("P", poly((-0.06 * s, leg_top), (0.06 * s, leg_top), (stride + 0.05 * s, 0), (stride - 0.07 * s, 0)), pants, None),
                ("P", poly((-0.06 * s, leg_top), (0.06 * s, leg_top), (-stride + 0.07 * s, 0), (-stride - 0.05 * s, 0)),
                 shade(pants, 0.8), None)]
        torso = ("P", poly((-0.12 * s, leg_top - 0.04 * s), (0.12 * s, leg_top - 0.04 * s), (0.1 * s, shoulder),
                           (-0.11 * s, shoulder)), shirt, None)
        arms = [("L", (poly((0, shoulder - 0.05 * s), (stride * 0.6, leg_top + 0.05 * s)), 0.08 * s), shade(shirt, 0.85), None)]
    else:
        legs = [("M", rect(-0.15 * s, 0, -0.02 * s, leg_top) + rect(0.02 * s, 0, 0.15 * s, leg_top), pants, None)]
        if p["dress"]:
            legs.append(("P", poly((-0.2 * s, 0.45 * s), (0.2 * s, 0.45 * s), (0.14 * s, leg_top), (-0.14 * s, leg_top)), shirt, None))
        torso = ("P", poly((-0.16 * s, leg_top - 0.04 * s), (0.16 * s, leg_top - 0.04 * s), (hw, shoulder - 0.03 * s),
                           (hw - 0.05 * s, shoulder), (-hw + 0.05 * s, shoulder), (-hw, shoulder - 0.03 * s)), shirt, None)
        arms = [("M", poly((-hw, shoulder - 0.03 * s), (-hw + 0.07 * s, shoulder - 0.03 * s), (-hw + 0.02 * s, leg_top),
                           (-hw - 0.06 * s, leg_top), (hw, shoulder - 0.03 * s), (hw - 0.07 * s, shoulder - 0.03 * s),
                           (hw - 0.02 * s, leg_top), (hw + 0.06 * s, leg_top)), shade(shirt, 0.85), None)]
    out = legs + [torso] + arms
    out.append(("P", rect(-0.045 * s, shoulder - 0.02 * s, 0.045 * s, shoulder + 0.06 * s), skin, None))   # neck
    out.append(("E", (0, shoulder + 0.06 * s + head_r, head_r * 0.85, head_r), hair if view == "back" else skin, None))
    if px * h >= 24 and view != "back":
        out.append(("E", (0, shoulder + 0.08 * s + head_r * 1.5, head_r * 0.9, head_r * 0.55), hair, None))
    if p["bag"] and px * h >= 16:
        out.append(("P", rect(0.1 * s, 0.9 * s, 0.28 * s, 1.12 * s), p["bag"], None))
    return out


def bicycle(p, view, px):
    col, r = p["color"], p["r"]
    th = max(0.045, 1.2 / max(px, 1e-3)) if px * r < 6 else 0.05     # at least ~1 px thick
    if view == "side":
        a, b = -0.55, 0.55
        seat, bar = (-0.18, 0.95), (0.42, 1.0)
        crank = (0.0, r)
        out = [("R", (a, r, r, r, th * 1.3), TIRE, None), ("R", (b, r, r, r, th * 1.3), TIRE, None),
               ("L", (poly((a, r), crank, seat, (a, r)), th), col, None),
               ("L", (poly(crank, (0.38, 0.85), seat), th), col, None),
               ("L", (poly((b, r), bar, (0.3, 1.05)), th), col, None),
               ("L", (poly((seat[0] - 0.1, seat[1] + 0.04), (seat[0] + 0.1, seat[1] + 0.04)), th * 1.6), BLACK, None)]
        if p["lamp"]:
            out.append(("E", (b + 0.02, 0.75, 0.05, 0.05), (230, 230, 230), HEAD))
        return out
    # rear/front view: a narrow silhouette
    out = [("P", rect(-0.035, 0, 0.035, 2 * r), TIRE, None),
           ("L", (poly((-0.3, 1.0), (0.3, 1.0)), th), col, None),
           ("P", rect(-0.04, r, 0.04, 1.0), col, None)]
    if view == "rear":
        out.append(("E", (0, 0.55, 0.05, 0.05), (40, 40, 190), TAIL))
    elif p["lamp"]:
        out.append(("E", (0, 0.8, 0.06, 0.06), (230, 230, 230), HEAD))
    return out


# ---------------------------------------------------------------- street furniture

def traffic_light(p, view, px):
    """Housing with three lamps; one lit.  ``p['layout']`` vertical or horizontal."""
    housing, state = p["housing"], p["state"]
    n, r = 3, 0.14
    vertical = p["layout"] == "vertical"
    w, h = (0.45, 1.15) if vertical else (1.15, 0.45)
    out = [("P", rect(-w / 2, 0, w / 2, h), housing, None)]
    if p["backplate"]:
        out.insert(0, ("P", rect(-w / 2 - 0.1, -0.06, w / 2 + 0.1, h + 0.06), p["backplate"], None))
    colours = [((30, 30, 230), (60, 60, 255)), ((20, 170, 240), (60, 200, 255)), ((110, 200, 40), (190, 255, 120))]
    if not vertical:                    # horizontal housings (target style) read green..red left to right
        colours = colours[::-1]
    for k in range(n):
        c = (w / 2, h - (k + 0.5) * h / n) if vertical else (-w / 2 + (k + 0.5) * w / n, h / 2)
        c = (0.0, c[1]) if vertical else (c[0], c[1])
        on = k == state if vertical else (n - 1 - k) == state
        alb, em = colours[k]
        out.append(("E", (c[0], c[1], r, r), alb if on else (45, 45, 45), tuple(3 * x for x in em) if on else None))
    return out


def traffic_sign(p, view, px):
    kind, size = p["kind"], p["size"]
    R = size / 2
    cv = R
    if kind == "circle_red":            # prohibition: red ring on white, black glyph
        out = [("E", (0, cv, R, R), (40, 40, 200), None), ("E", (0, cv, R * 0.75, R * 0.75), WHITE, None)]
        if px * size >= 10:
            out.append(("P", rect(-R * 0.35, cv - R * 0.3, -R * 0.05, cv + R * 0.35), BLACK, None))
            out.append(("P", rect(R * 0.05, cv - R * 0.3, R * 0.35, cv + R * 0.35), BLACK, None))
        return out
    if kind == "triangle_red":          # warning, point up
        tri = regular(3, R * 1.15, 0, cv - R * 0.1)
        return [("P", tri, (40, 40, 200), None), ("P", regular(3, R * 0.75, 0, cv - R * 0.1), WHITE, None)]
    if kind == "octagon":               # stop
        out = [("P", regular(8, R, 0, cv, np.pi / 8), (40, 40, 205), None)]
        if px * size >= 10:
            out.append(("P", rect(-R * 0.6, cv - R * 0.15, R * 0.6, cv + R * 0.15), WHITE, None))
        return out
    if kind == "blue_round":            # mandatory direction
        return [("E", (0, cv, R, R), (170, 90, 20), None),
                ("L", (poly((0, cv - R * 0.55), (0, cv + R * 0.5), (-R * 0.3, cv + R * 0.2)), R * 0.15), WHITE, None)]
    if kind == "rect_blue":             # information square
        return [("P", rect(-R, 0, R, size), (160, 80, 20), None),
                ("P", rect(-R * 0.3, size * 0.2, R * 0.3, size * 0.75), WHITE, None)]
    if kind == "diamond_yellow":        # target style warning (North American)
        return [("P", regular(4, R * 1.1, 0, cv), (20, 20, 20), None),
                ("P", regular(4, R * 0.98, 0, cv), (20, 200, 240), None),
                ("P", rect(-R * 0.12, cv - R * 0.4, R * 0.12, cv + R * 0.4), (20, 20, 20), None)]
    if kind == "rect_white":            # target style speed limit: tall white rectangle
        out = [("P", rect(-R * 0.8, 0, R * 0.8, size * 1.2), (25, 25, 25), None),
               ("P", rect(-R * 0.72, size * 0.04, R * 0.72, size * 1.16), (235, 235, 235), None)]
        if px * size >= 10:
            out.append(("P", rect(-R * 0.5, size * 0.25, R * 0.5, size * 0.45), BLACK, None))
        return out
    if kind == "rect_green":            # direction board
        w, hh = p["w"], p["hh"]
        out = [("P", rect(-w / 2, 0, w / 2, hh), (50, 120, 20), None),
               ("L", (rect(-w / 2 + 0.08, 0.08, w / 2 - 0.08, hh - 0.08), 0.05), WHITE, None)]
        if px * w >= 20:
            for k in range(2):
                v = hh * (0.3 + 0.35 * k)
                out.append(("P", rect(-w * 0.3, v, w * (0.1 + 0.1 * k), v + hh * 0.12), WHITE, None))
        return out
    raise ValueError(kind)


def pole(p, view, px):
    """A pole from the ground to ``p['top']`` metres, optionally with a horizontal mast arm
    to ``p['arm']`` (signed, metres)."""
    th = max(p["w"], 1.0 / max(px, 1e-3))
    out = [("P", rect(-th / 2, 0, th / 2, p["top"]), p["color"], None)]
    if p.get("arm"):
        a = p["arm"]
        out.append(("P", rect(min(0, a), p["top"] - th * 1.5, max(0, a), p["top"]), p["color"], None))
    return out


def lamp(p, view, px):
    """Street lamp: pole, arm reaching over the road, a head that glows at night."""
    top, arm, col = p["top"], p["arm"], p["color"]
    th = max(0.16, 1.0 / max(px, 1e-3))
    out = [("P", rect(-th / 2, 0, th / 2, top), col, None),
           ("L", (poly((0, top - 0.3), (arm * 0.4, top + 0.25), (arm, top + 0.1)), th * 0.7), col, None),
           ("E", (arm, top - 0.02, 0.38, 0.13), (200, 210, 215), p["light"])]
    return out


def tree(p, view, px):
    h, crown = p["h"], p["crown"]
    out = [("P", rect(-0.14, 0, 0.14, h * 0.55), (40, 55, 75), None)]
    if px * crown < 8:                                   # far: one blob
        return out + [("E", (0, h * 0.62 + 0.4 * crown, crown, crown * 0.9), p["greens"][0], None)]
    for (du, dv, r), c in zip(p["blobs"], p["greens"]):
        out.append(("E", (du * crown, h * 0.62 + dv * crown, r * crown, r * crown * 0.9), c, None))
    return out


SHAPES = {"car": car, "truck": truck, "bus": bus, "person": person, "bicycle": bicycle,
          "traffic_light": traffic_light, "traffic_sign": traffic_sign, "pole": pole, "lamp": lamp,
          "tree": tree}
