"""Soft labels for real images, made the way a distilled set's were: the soft-label random baseline.

With soft labels a network learns from the labeller as much as from the images (knowledge
distillation), so a random real subset with the SAME KIND of soft labels belongs beside every soft-label
result: what the distilled set gains over it is the images' gain, what that subset gains over random real
images with hard labels is the labels'. The labeller is the one that made the distilled set's labels:

- trajectory matching (DATM's learned label logits): the label logits were initialised from the experts'
  final snapshots (the mean logits of the experts that classify the image correctly with DATM's
  correct-init, else expert 0's logits), so the random images get exactly those logits, from the same
  store;
- D3: the softmax of one all-class expert's logits at snapshot `d3.label_epoch` (its `label-expert`
  store); the random images get that expert's logits (their softmax is the same kind of label).

The store is `eval.label_experts` when set, else found beside the artifact (its run directory's
`experts` or `label-expert`, or the one above it, where the demo keeps the experts of both IPCs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .config import Config
from .data.prepared import PreparedData
from .errors import DistillsetError
from .experts.store import TrajectoryStore


@dataclass
class Labeller:
    """images (network input space), hard labels -> label logits; `describe` says whose, in words."""

    fn: Callable[[Tensor, Tensor], Tensor]
    describe: str
    store: Path

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.fn(x, y).detach().float()


def _candidates(cfg: Config, artifact_path: str | Path | None, name: str) -> list[Path]:
    if cfg.eval.label_experts:
        return [Path(cfg.eval.label_experts)]
    if artifact_path is None:
        return []
    art = Path(artifact_path)
    return [art.parent / name, art.parent.parent / name]


def labeller_for(
    art: object, cfg: Config, data: PreparedData, artifact_path: str | Path | None
) -> tuple[Labeller | None, str]:
    """The labeller of a soft-label artifact, or None and the reason it cannot be had (no store found, or
    a store made for another setting)."""
    distributional = getattr(art, "kind", "images") == "distributional"
    name = "label-expert" if distributional else "experts"
    found = [p for p in _candidates(cfg, artifact_path, name) if (p / "manifest.json").exists()]
    if not found:
        where = cfg.eval.label_experts or f"{name}/ beside the artifact"
        return None, (
            f"no expert store to label the soft-label random baseline ({where}); pass "
            "eval.label_experts=DIR (the experts that made the labels)"
        )
    path = found[0]
    try:
        return (_d3_labeller if distributional else _trajectory_labeller)(cfg, data, path), ""
    except DistillsetError as e:
        return None, f"the expert store {path} cannot label the soft-label random baseline: {e}"


def _trajectory_labeller(cfg: Config, data: PreparedData, path: Path) -> Labeller:
    from .experts.train import build_expert_model
    from .objectives.trajectory.objective import final_classifiers, label_experts, open_experts, used_experts
    from .synthetic.init import expert_label_logits

    store = open_experts(cfg, data, path)  # checks the store against the config
    consulted, mean_over_correct = label_experts(cfg.distill, used_experts(cfg.distill, store))
    device = data.train_x.device
    model = build_expert_model(cfg, data, ("expert", 0, "init")).to(device)
    classifiers = final_classifiers(cfg, store, consulted, model, device)
    how = (
        f"the mean logits of the {len(consulted)} experts' final snapshots that classify each image "
        "correctly (DATM's label initialisation)"
        if mean_over_correct
        else "expert 0's final-snapshot logits (the distilled set's label initialisation)"
    )
    return Labeller(lambda x, y: expert_label_logits(x, y, classifiers, mean_over_correct), how, path)


def _d3_labeller(cfg: Config, data: PreparedData, path: Path) -> Labeller:
    from .federated import label_expert_logits

    store = TrajectoryStore(path)
    if not store.completed:
        raise DistillsetError(f"{path} holds no finished labelling expert")
    if cfg.d3.label_epoch is None:
        raise DistillsetError("d3.label_epoch is unset: the artifact's labels came from no expert")
    how = f"the labelling expert's logits at epoch {cfg.d3.label_epoch} (D3's soft labels)"
    return Labeller(lambda x, y: label_expert_logits(cfg, data, store, x), how, path)
