"""DriveSim: an offline, regenerable domain-shift benchmark of street scenes.

Procedural streets seen from a car (:mod:`.scene`), drawn once into domain-independent
layers with exact visible-extent boxes (:mod:`.render`), imaged in four domains —
day (source), night, fog, rain (:mod:`.domains`) — and written as a complete Darknet
experiment folder (:mod:`.dataset`, ``darknet-kd drivesim``).
"""
from .dataset import (PRESETS, generate, make_scene, render_scene, scene_labels, split_code)
from .domains import DOMAINS, render_domain
from .render import MIN_BOX_AREA, MIN_BOX_PX, MIN_VISIBLE, rasterize
from .scene import CLASSES, STYLES, sample_scene

__all__ = ["CLASSES", "DOMAINS", "PRESETS", "STYLES", "MIN_VISIBLE", "MIN_BOX_PX", "MIN_BOX_AREA", "generate",
           "make_scene", "render_scene", "scene_labels", "split_code", "rasterize", "render_domain", "sample_scene"]
