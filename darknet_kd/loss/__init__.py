"""Losses: Darknet's YOLO loss (yolo.py); the distillation losses live beside it."""
from .yolo import YoloLoss

__all__ = ["YoloLoss"]
