"""Synthetic sets: the learnable-set interface, prototypes, the artifact and the initialisations."""

from .artifact import DistilledSet
from .distributional import LatentPriors
from .init import correct_real_indices, expert_label_logits, random_real_indices, representative_real_indices
from .latent_artifact import LatentSet
from .prototypes import Prototypes
from .set import SyntheticSet

__all__ = [
    "DistilledSet",
    "LatentPriors",
    "LatentSet",
    "Prototypes",
    "SyntheticSet",
    "correct_real_indices",
    "expert_label_logits",
    "random_real_indices",
    "representative_real_indices",
]
