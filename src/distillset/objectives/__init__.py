"""Matching objectives, one file each, found by name through a small registry (`distill.objective`).

- `trajectory` (MTT, DATM, PAD, AST): a student trained on the set imitates an expert's trajectory;
- `gradient` (DC, DSA): a network's gradients on the set match those on real batches;
- `distribution` (DM): a random network's mean embeddings of the set match those of real batches;
- `d3` (D3): trajectory matching then an MMD step, on latent priors and a decoder (`mmd`).
"""

from . import d3, distribution, gradient, trajectory  # noqa: F401  (each registers its objective)
from .base import OBJECTIVES, Objective, Term, objective_class, register_objective
from .trajectory import (
    ParameterMatch,
    Weighted,
    deep_parameters,
    dropped_share,
    intermediate_steps,
    normalized_match,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ParameterMatch",
    "Term",
    "Weighted",
    "deep_parameters",
    "dropped_share",
    "intermediate_steps",
    "normalized_match",
    "objective_class",
    "register_objective",
]
