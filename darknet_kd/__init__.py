"""darknet-kd: Darknet-exact YOLO in PyTorch, with GAN + teacher distillation and
source-free adaptation.  ``darknet_kd.load(cfg, weights)`` gives a Darknet model."""
from .errors import CfgError, DarknetKDError, DataError, WeightsError
from .model import Darknet, load

__version__ = "0.1.0"
__all__ = ["Darknet", "load", "DarknetKDError", "CfgError", "WeightsError", "DataError", "__version__"]
