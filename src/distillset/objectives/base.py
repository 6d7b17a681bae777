"""What an objective is, and the registry the presets name them through (`distill.objective`).

Per iteration the loop asks the objective for its terms: each a loss and the names of the synthetic
set's tensors it moves. The loop steps the set on each term the objective does not skip, then logs what
the objective records. Everything special to a method (the experts and their window, DC's network and
its training between rounds, DM's random network, PAD's filters) lives in its objective.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..config import Config
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..synthetic import SyntheticSet


@dataclass
class Term:
    """One loss of an iteration: back-propagated and stepped into the tensors named in `moves`, unless
    the objective says to `skip` it (DATM's threshold)."""

    loss: Tensor
    moves: tuple[str, ...]
    skip: bool = False


class Objective(ABC):
    """A matching objective. Built once per run by `build`, from the config sections it reads."""

    name: ClassVar[str]
    needs_experts: ClassVar[bool] = False  # the pipeline trains experts first when set
    subtasks: ClassVar[bool] = False  # the pipeline distils class blocks alone and merges (federated.py)

    @classmethod
    def check(cls, cfg: Config) -> None:
        """Stop on a setting that cannot work, before any experts are trained (by default: nothing)."""
        return None

    @classmethod
    @abstractmethod
    def build(cls, cfg: Config, data: PreparedData, run: Path, store: object, progress: bool) -> Objective:
        """The objective of a run in directory `run` (`store`: the experts, for objectives that need them)."""

    @abstractmethod
    def identity(self) -> dict:
        """What a checkpoint must match besides the distill and eval sections (experts, network, scores)."""

    @abstractmethod
    def initial_set(self) -> tuple[SyntheticSet, dict]:
        """The synthetic set at iteration 0, and what to record about its initialisation."""

    @abstractmethod
    def terms(self, it: int, gen: torch.Generator, synthetic: SyntheticSet) -> Iterator[Term]:
        """The terms of iteration `it`; every random choice from `gen`. The loop steps the set on a term
        before the next is asked for, so a later term (DC's next round) sees the moved set."""

    @abstractmethod
    def record(self, synthetic: SyntheticSet) -> dict:
        """What to log for the iteration just done (after its steps)."""

    def describe(self) -> str:
        """A few words on the iteration just done, for the progress bar."""
        return ""

    def diverged(self, value: float, it: int, synthetic: SyntheticSet) -> str:
        """The message when a term's loss is not finite."""
        return f"the matching loss is {value} at iteration {it}; lower distill.lr_img."

    def summary(self) -> dict:
        """What the artifact's manifest records about the objective."""
        return {}


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an objective available as `distill.objective=<cls.name>`."""
    OBJECTIVES[cls.name] = cls
    return cls


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown distill.objective {name!r}; valid: {', '.join(sorted(OBJECTIVES))}.")
    return OBJECTIVES[name]
