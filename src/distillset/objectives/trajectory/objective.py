"""Trajectory matching (MTT, DATM, PAD, AST) as an objective of the distillation loop.

One iteration: pick the next expert of a shuffled cycle, draw a start epoch t from the (possibly growing)
window, start a student at the expert's snapshot t (AST: its conv weights perturbed), train it
`syn_steps` steps on the synthetic set (AST: heavy-ball momentum, the inner loss weighted by the start
epoch), compare the result with snapshot t + `expert_epochs` by the normalised parameter loss over PAD's
kept parameters (AST: plus intermediate terms), and move the images, the synthetic lr and (DATM) the
label logits. DATM skips the update when the loss exceeds `threshold`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ...config import Config, DistillConfig
from ...data.prepared import PreparedData
from ...errors import ConfigError, StoreError
from ...experts.store import TrajectoryStore
from ...experts.train import build_expert_model, store_identity
from ...identity import mismatch
from ...inner import Student, meta_loss, sample_plan
from ...inner.alignment import balance_factor, perturb_conv_weights
from ...models.params import ParamLayout, functional_forward
from ...networks import seeded_model
from ...synthetic import (
    Prototypes,
    correct_real_indices,
    expert_label_logits,
    random_real_indices,
    representative_real_indices,
)
from ...utils import generator
from ..base import Objective, Term, register_objective
from .loss import ParameterMatch, Weighted, deep_parameters, dropped_share, intermediate_steps

SKIP_WARNING_AFTER = 20  # consecutive updates skipped by the threshold before the run says so


# ---------------------------------------------------------------- schedule


def start_epoch_upper(dcfg: DistillConfig, it: int) -> int:
    """The exclusive upper bound of the start epoch at iteration `it`.

    Without sequential generation it is `max_start_epoch` (MTT). With it (DATM) the window grows linearly
    from `current_max_start_epoch` at iteration 0 to `max_start_epoch` at `expansion_end_epoch`:
    `min(max, current + int((max - current) * it / expansion_end_epoch))`.
    """
    if not dcfg.sequential_generation:
        return dcfg.max_start_epoch
    cur, top = dcfg.current_max_start_epoch, dcfg.max_start_epoch
    return min(top, cur + int((top - cur) * it / dcfg.expansion_end_epoch))


def sample_start_epoch(dcfg: DistillConfig, it: int, gen: torch.Generator) -> int:
    """t ~ U[min_start_epoch, upper) (both engines of randomness on the CPU generator `gen`)."""
    upper = start_epoch_upper(dcfg, it)
    return int(torch.randint(dcfg.min_start_epoch, upper, (1,), generator=gen))


def expert_for_iteration(experts: list[int], seed: int, it: int) -> int:
    """MTT cycles through the experts in a shuffled order, reshuffling after each full pass."""
    n = len(experts)
    order = torch.randperm(n, generator=generator(seed, "distill", "expert-order", it // n))
    return experts[int(order[it % n])]


def check_schedule(dcfg: DistillConfig, train_epochs: int) -> None:
    """Stop before any work when the start-epoch window cannot be drawn from the stored trajectories."""
    if dcfg.min_start_epoch >= dcfg.max_start_epoch:
        raise ConfigError(
            f"distill.min_start_epoch ({dcfg.min_start_epoch}) must be below distill.max_start_epoch "
            f"({dcfg.max_start_epoch})."
        )
    if dcfg.sequential_generation and dcfg.min_start_epoch >= dcfg.current_max_start_epoch:
        raise ConfigError(
            f"distill.min_start_epoch ({dcfg.min_start_epoch}) must be below "
            f"distill.current_max_start_epoch ({dcfg.current_max_start_epoch}) with sequential generation."
        )
    if dcfg.max_start_epoch - 1 + dcfg.expert_epochs > train_epochs:
        raise ConfigError(
            f"start epochs up to {dcfg.max_start_epoch - 1} plus distill.expert_epochs={dcfg.expert_epochs} "
            f"reach past the experts' {train_epochs} epochs; lower distill.max_start_epoch or train the "
            "experts longer (experts.train_epochs)."
        )
    if dcfg.intermediate:
        intermediate_steps(dcfg.syn_steps, dcfg.expert_epochs, dcfg.intermediate_beta)  # raises if impossible


# ---------------------------------------------------------------- experts


def open_experts(cfg: Config, data: PreparedData, path: str | Path) -> TrajectoryStore:
    """The trajectory store at `path`, checked against the config: same model, data, split, preprocessing."""
    store = TrajectoryStore(path)
    probe = build_expert_model(cfg, data, ("expert", 0, "init"))
    diff = mismatch(store.identity, store_identity(cfg, data, probe))
    if diff:
        raise StoreError(
            f"the experts in {path} were made with another setting: {diff}; use the same config or "
            "train new experts into another directory."
        )
    if not store.completed:
        raise StoreError(f"{path} holds no finished expert yet; run `distillset experts` to train them.")
    return store


class SnapshotClassifier:
    """An expert snapshot as an images -> logits function (DATM's initialisation and soft labels)."""

    def __init__(self, model: torch.nn.Module, layout: ParamLayout, flat: Tensor):
        self.model, self.layout, self.flat = model, layout, flat

    def __call__(self, x: Tensor) -> Tensor:
        self.model.eval()
        return functional_forward(self.model, self.flat, x, layout=self.layout)


def final_classifiers(
    cfg: Config, store: TrajectoryStore, experts: list[int], model: torch.nn.Module, device: torch.device
) -> list[SnapshotClassifier]:
    """The final snapshots of `experts` as classifiers (on `model`'s architecture)."""
    layout = ParamLayout.from_model(model)
    final = int(store.manifest.get("train_epochs", cfg.experts.train_epochs))
    return [SnapshotClassifier(model, layout, store.snapshot(e, final, device=device)) for e in experts]


def used_experts(dcfg: DistillConfig, store: TrajectoryStore) -> list[int]:
    """The finished experts a run matches (the first `max_experts` of them, when set)."""
    return store.completed[: dcfg.max_experts] if dcfg.max_experts else store.completed


def label_experts(dcfg: DistillConfig, experts: list[int]) -> tuple[list[int], bool]:
    """Which experts DATM's label logits read and how: DATM's correct-init averages every expert that
    classifies an image correctly; every other initialisation reads expert 0's final snapshot."""
    correct = dcfg.init == "correct"
    return (experts if correct else experts[:1]), correct


def initial_prototypes(
    cfg: Config, data: PreparedData, store: TrajectoryStore, experts: list[int], model: torch.nn.Module
) -> tuple[Prototypes, dict]:
    """Real images per class (MTT: random; DATM: classified correctly by the experts; AST: the k-means
    representatives of expert 0's logits), hard labels or label logits from the experts' final snapshots,
    and the synthetic lr at `lr_init` (the experts' lr)."""
    dcfg, device = cfg.distill, data.train_x.device
    ipc, num_classes = cfg.data.ipc, data.num_classes
    if dcfg.init == "noise":
        raise ConfigError(
            "trajectory matching starts from real images: set distill.init to real, correct or "
            "representative."
        )
    gen = generator(cfg.seed, "distill", "init")
    # MTT (random real, hard labels) never consults the experts; only DATM's correct-init walks (and
    # averages) all of them, the other initialisations and soft labels read expert 0's final snapshot.
    needed = dcfg.init != "real" or dcfg.soft_label
    consulted, mean_over_correct = label_experts(dcfg, experts)
    classifiers = final_classifiers(cfg, store, consulted, model, device) if needed else []
    info: dict = {"init": dcfg.init}
    if dcfg.init == "correct":
        idx, filled = correct_real_indices(data.train_x, data.train_y, ipc, num_classes, classifiers, gen)
        info["filled_without_correct_prediction"] = filled
    elif dcfg.init == "representative":
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        idx = representative_real_indices(data.train_x, data.train_y, ipc, num_classes, classifiers[0], seed)
    else:
        idx = random_real_indices(data.train_y, ipc, num_classes, gen)
    idx = idx.to(device)
    images = data.train_x[idx].detach().clone().float()
    labels = data.train_y[idx].clone()
    lr = torch.tensor(dcfg.lr_init or cfg.experts.lr_teacher, device=device)
    learn = {"images": (dcfg.lr_img, dcfg.momentum_img), "lr": (dcfg.lr_lr, dcfg.momentum_lr)}
    if dcfg.soft_label:
        logits = expert_label_logits(images.detach(), labels, classifiers, mean_over_correct)
        info["soft_label_agreement"] = float((logits.argmax(1) == labels).float().mean())
        learn["label_logits"] = (dcfg.lr_y, dcfg.momentum_y)
        synthetic = Prototypes(images, lr, learn, label_logits=logits.detach().clone().float())
    else:
        synthetic = Prototypes(images, lr, learn, labels=labels)
    info["indices"] = idx.cpu().tolist()
    return synthetic, info


# ---------------------------------------------------------------- the matching loss


def diverged_message(dcfg: DistillConfig, value: float, it: int, lr: float) -> str:
    """What to turn when the matching loss is no longer finite."""
    msg = f"the matching loss is {value} at iteration {it} (the synthetic lr is {lr:.3g}); "
    if dcfg.inner_momentum:
        step = (dcfg.lr_init or 0) / (1 - dcfg.inner_momentum)
        return msg + (
            f"with distill.inner_momentum={dcfg.inner_momentum} the student's effective step is "
            f"lr / (1 - mu){f' = {step:.3g} at the start' if step else ''}: lower distill.lr_init (e.g. "
            "times 1 - mu), or distill.lr_lr or distill.lr_img."
        )
    return msg + "lower distill.lr_img or distill.lr_lr."


def matching_terms(
    dcfg: DistillConfig,
    store: TrajectoryStore,
    expert: int,
    start_epoch: int,
    start: Tensor,
    keep: slice | None,
    intermediate: list[tuple[int, int, float]],
) -> dict[int, ParameterMatch | Weighted]:
    """The loss terms by inner step: the normalised match of theta_N with the expert's epoch t + M, and
    (AST) of theta_{k_i} with epoch t + i, weighted by beta_i. Every denominator measures from `start`,
    the point the student starts at (perturbed, under AST's weight perturbation)."""
    device = start.device
    target = store.snapshot(expert, start_epoch + dcfg.expert_epochs, device=device)
    terms: dict[int, ParameterMatch | Weighted] = {
        dcfg.syn_steps: ParameterMatch(start, target, keep, dcfg.loss_ratio)
    }
    for k, i, beta in intermediate:
        mid = store.snapshot(expert, start_epoch + i, device=device)
        terms[k] = Weighted(ParameterMatch(start, mid, keep, dcfg.loss_ratio), beta)
    return terms


# ---------------------------------------------------------------- the objective


@register_objective
class TrajectoryMatching(Objective):
    name = "trajectory"
    needs_experts = True

    @classmethod
    def check(cls, cfg: Config) -> None:
        check_schedule(cfg.distill, cfg.experts.train_epochs)

    @classmethod
    def build(
        cls, cfg: Config, data: PreparedData, run: Path, store: TrajectoryStore | None, progress: bool
    ) -> TrajectoryMatching:
        store = store if store is not None else open_experts(cfg, data, run / "experts")
        return cls(cfg, data, store)

    def __init__(self, cfg: Config, data: PreparedData, store: TrajectoryStore):
        dcfg = self.dcfg = cfg.distill
        self.cfg, self.data, self.store, self.seed = cfg, data, store, cfg.seed
        check_schedule(dcfg, int(store.manifest.get("train_epochs", cfg.experts.train_epochs)))
        self.experts = used_experts(dcfg, store)
        device = data.train_x.device
        self.model = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "student").to(
            device
        )
        self.student = Student.of(self.model, momentum=dcfg.inner_momentum)
        if self.student.layout.numel != store.num_params:
            raise StoreError(
                f"the experts have {store.num_params} parameters but the configured model has "
                f"{self.student.layout.numel}; use the experts' model settings."
            )
        # PAD's parameter selection: the matched index set, fixed for the run (None: every parameter).
        self.keep = deep_parameters(self.student.layout, dcfg.depth_ratio, dcfg.mask)
        self.image_size = tuple(data.image_shape[1:])
        self.strategy = data.dsa_strategy if dcfg.dsa else None
        self.intermediate = (
            intermediate_steps(dcfg.syn_steps, dcfg.expert_epochs, dcfg.intermediate_beta)
            if dcfg.intermediate
            else []
        )
        self.skipped_in_a_row = 0
        self._record: dict = {}

    def identity(self) -> dict:
        return {"experts": self.store.identity}

    def initial_set(self) -> tuple[Prototypes, dict]:
        synthetic, info = initial_prototypes(self.cfg, self.data, self.store, self.experts, self.model)
        dcfg, layout = self.dcfg, self.student.layout
        if self.keep is not None or dcfg.loss_ratio:
            info["matched_parameters"] = {
                "from_index": self.keep.start if self.keep is not None else 0,
                "of": layout.numel,
                "dropped_share": dropped_share(layout, self.keep),
                "loss_ratio": dcfg.loss_ratio,
            }
        return synthetic, info

    def terms(self, it: int, gen: torch.Generator, synthetic: Prototypes) -> Iterator[Term]:
        dcfg, device = self.dcfg, self.data.train_x.device
        expert = expert_for_iteration(self.experts, self.seed, it)
        upper = start_epoch_upper(dcfg, it)
        start_epoch = sample_start_epoch(dcfg, it, gen)
        start = self.store.snapshot(expert, start_epoch, device=device)
        plan = sample_plan(
            len(synthetic), dcfg.syn_steps, dcfg.batch_syn, self.image_size, self.strategy, gen, device
        )
        if dcfg.perturb_alpha:  # AST: the start point's conv weights only; the student starts there
            start = perturb_conv_weights(start, self.student.layout, dcfg.perturb_alpha, gen)
        matches = matching_terms(dcfg, self.store, expert, start_epoch, start, self.keep, self.intermediate)
        inner = self.student
        if dcfg.balance_loss:
            inner = dataclasses.replace(inner, loss_scale=balance_factor(start_epoch, dcfg.max_start_epoch))
        images, targets, plan = synthetic.inner_batches(plan, gen)  # D3: a fresh sample per step
        loss = meta_loss(dcfg.engine, inner, start, images, targets, synthetic.lr, plan, matches)
        value = float(loss.detach())
        skipped = dcfg.threshold is not None and value > dcfg.threshold
        self._note_skip(skipped, value)
        self._record = {
            "loss": value,
            "skipped": skipped,
            "expert": expert,
            "start_epoch": start_epoch,
            "window": [dcfg.min_start_epoch, upper],
        }
        if dcfg.balance_loss:
            self._scale = round(inner.loss_scale, 6)
        yield Term(loss, tuple(synthetic.optimizers), skip=skipped)

    def _note_skip(self, skipped: bool, value: float) -> None:
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row == SKIP_WARNING_AFTER:
            warnings.warn(
                f"the last {SKIP_WARNING_AFTER} updates were all skipped: the matching loss stayed above "
                f"distill.threshold={self.dcfg.threshold} (now {value:.3f}), so neither the images nor "
                "the lr can move. The student overshoots the expert: lower distill.lr_init or "
                "distill.syn_steps, or raise distill.threshold.",
                stacklevel=4,
            )

    def record(self, synthetic: Prototypes) -> dict:
        out = {**self._record, "syn_lr": float(synthetic.lr.detach())}
        if self.dcfg.balance_loss:
            out["inner_loss_scale"] = self._scale
        return out

    def describe(self) -> str:
        lo, hi = self._record["window"]
        return f"loss {self._record['loss']:.3f} t in [{lo},{hi})"

    def diverged(self, value: float, it: int, synthetic: Prototypes) -> str:
        return diverged_message(self.dcfg, value, it, float(synthetic.lr.detach()))

    def summary(self) -> dict:
        return {"experts_used": len(self.experts)}
