"""Synthetic sets: the distilled-set artifact and its initialisations."""

from .artifact import DistilledSet
from .init import random_real_indices

__all__ = ["DistilledSet", "random_real_indices"]
