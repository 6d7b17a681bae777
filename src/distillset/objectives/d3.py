"""D3 (Qin, Deng, Alvarez-Melis 2024) as an objective of the loop: two objectives in one iteration.

The set is distributional (synthetic/distributional: latent priors and a decoder). Each iteration:
1. the trajectory step: trajectory matching's objective, unchanged (a random expert of the shuffled
   cycle, a start epoch, `syn_steps` plain-SGD student steps of size LeakyReLU(alpha) + 1e-4, MTT's
   normalised loss); the set decodes a fresh sample at every inner step, with hard labels and no DSA
   (the preset turns `distill.dsa` off). The meta-gradient of the chosen engine (adjoint by default)
   flows on through the decoded images into the decoder and the latents; it moves latents, alpha and
   decoder.
2. the MMD step (objectives/mmd) on the set as the first step left it: moves latents and decoder.

Sub-tasks (federated.py) run this objective on each class block with the block's own experts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config
from ..data.prepared import PreparedData
from ..experts.store import TrajectoryStore
from ..identity import settings
from ..synthetic.decoders import DecoderSpec, num_parameters
from ..synthetic.distributional import LatentPriors
from ..utils import generator
from .base import Objective, Term, register_objective
from .mmd import MMDStep
from .trajectory import TrajectoryMatching, open_experts

# d3 keys that do not change a sub-task's distillation (they act after it: the labels, the evaluation,
# the split into blocks, which shows in the data's fingerprint anyway)
AFTER_DISTILLATION = ("label_epoch", "eval_samples", "subtasks")


@register_objective
class D3Matching(Objective):
    name = "d3"
    needs_experts = True
    subtasks = True  # the pipeline distils each class block alone and merges (federated.py)

    check = TrajectoryMatching.check  # the same start-epoch window over the (sub-task's) experts

    @classmethod
    def build(cls, cfg: Config, data: PreparedData, run: Path, store: object, progress: bool) -> D3Matching:
        return cls(cfg, data, store if store is not None else open_experts(cfg, data, run / "experts"))

    def __init__(self, cfg: Config, data: PreparedData, store: TrajectoryStore):
        self.cfg, self.data, self.store = cfg, data, store
        self.trajectory = TrajectoryMatching(cfg, data, store)
        self.mmd = (
            MMDStep(cfg.d3, data, store, self.trajectory.experts, self.trajectory.model)
            if cfg.d3.mmd_weight > 0
            else None
        )
        self.spec = DecoderSpec.for_data(
            cfg.d3.decoder, cfg.d3.z_dim, cfg.d3.kernel_num, data.image_shape, data.train_x
        )

    def identity(self) -> dict:
        d3 = {k: v for k, v in settings(self.cfg.d3).items() if k not in AFTER_DISTILLATION}
        return {**self.trajectory.identity(), "d3": d3, "decoder": self.spec.to_dict()}

    def initial_set(self) -> tuple[LatentPriors, dict]:
        cfg, dcfg = self.cfg, self.cfg.distill
        synthetic = LatentPriors.initial(
            cfg.d3,
            self.spec,
            self.data.num_classes,
            dcfg.lr_init or cfg.experts.lr_teacher,
            dcfg.lr_lr,
            dcfg.momentum_lr,
            generator(cfg.seed, "distill", "init"),
            self.data.train_x.device,
        )
        info = {"init": "latent priors N(0, 1)", "decoder_parameters": num_parameters(synthetic.decoder)}
        return synthetic, info

    def terms(self, it: int, gen: torch.Generator, synthetic: LatentPriors) -> Iterator[Term]:
        yield from self.trajectory.terms(it, gen, synthetic)
        if self.mmd is not None:
            yield self.mmd.term(gen, synthetic)

    def record(self, synthetic: LatentPriors) -> dict:
        out = self.trajectory.record(synthetic)
        if self.mmd is not None:
            out["mmd"] = self.mmd.value
        return out

    def describe(self) -> str:
        mmd = f" mmd {self.mmd.value:.4f}" if self.mmd is not None else ""
        return self.trajectory.describe() + mmd

    def diverged(self, value: float, it: int, synthetic: LatentPriors) -> str:
        return (
            f"a D3 loss is {value} at iteration {it} (the student's step is {float(synthetic.lr):.3g}); "
            "lower d3.lr_latent, d3.lr_decode or distill.lr_lr."
        )

    def summary(self) -> dict:
        return {**self.trajectory.summary(), "decoder": self.spec.to_dict()}
