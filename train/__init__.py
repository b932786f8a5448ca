"""Training the teacher generator: losses, trainer, checkpoints, samples. Entry point: `run`."""

from .trainer import TrainResult, run

__all__ = ["TrainResult", "run"]
