from .trainer import Trainer, TrainOptions

__all__ = ["Trainer", "TrainOptions"]
