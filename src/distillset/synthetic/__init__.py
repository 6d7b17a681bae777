"""Synthetic sets: the distilled-set artifact and its initialisations."""

from .artifact import DistilledSet
from .init import correct_real_indices, expert_label_logits, random_real_indices, representative_real_indices

__all__ = [
    "DistilledSet",
    "correct_real_indices",
    "expert_label_logits",
    "random_real_indices",
    "representative_real_indices",
]
