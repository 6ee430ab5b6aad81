from .darknet import Darknet, NetOptions, load
from .layers import Yolo

__all__ = ["Darknet", "NetOptions", "Yolo", "load"]
