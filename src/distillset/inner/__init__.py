"""The student inner loop and its meta-gradient engines: unroll, tesla, adjoint."""

from .engines import ENGINES, meta_loss, rollout
from .plan import InnerPlan, sample_plan
from .student import Student

__all__ = ["ENGINES", "InnerPlan", "Student", "meta_loss", "rollout", "sample_plan"]
