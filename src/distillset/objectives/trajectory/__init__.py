"""Trajectory matching: the normalised parameter loss with PAD's selection, and the objective."""

from .loss import (
    ParameterMatch,
    Weighted,
    deep_parameters,
    dropped_share,
    intermediate_steps,
    normalized_match,
)
from .objective import (
    TrajectoryMatching,
    check_schedule,
    expert_for_iteration,
    open_experts,
    sample_start_epoch,
    start_epoch_upper,
)

__all__ = [
    "ParameterMatch",
    "TrajectoryMatching",
    "Weighted",
    "check_schedule",
    "deep_parameters",
    "dropped_share",
    "expert_for_iteration",
    "intermediate_steps",
    "normalized_match",
    "open_experts",
    "sample_start_epoch",
    "start_epoch_upper",
]
