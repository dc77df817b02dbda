"""Samplers of dataset indices (detectron2.data.samplers)."""
from .distributed_sampler import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = ["TrainingSampler", "InferenceSampler", "RepeatFactorTrainingSampler"]
