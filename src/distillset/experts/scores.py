"""Difficulty scores of the training examples, for PAD's data selection (`distillset scores CONFIG`).

Six scores, each computed by `num_models` briefly trained networks and averaged over them; for every
score, higher means harder:

  el2n              ||softmax(logits) - onehot(y)||_2 (Paul et al., 2021)
  grand             the norm of the last Linear layer's per-sample gradient (DeepCore's GraNd):
                    ||g||_2 * sqrt(1 + ||h||_2^2), g = softmax(logits) - onehot(y), h the penultimate features
  forgetting        forgetting events during training (Toneva et al., 2019); see `forgetting_events`
  entropy           -sum_k p_k log p_k of the predicted distribution
  least_confidence  1 - max_k p_k
  margin            1 - (p_top1 - p_top2)

DeepCore ranks its uncertainty scores by certainty (the opposite sign) and takes the largest *logit* for
least confidence; here every score uses the probabilities and the convention "higher = harder", so that
sorting in ascending order always goes from easy to hard.

The scoring networks are trained with the `scores` section's SGD recipe (DSA on the training batches when
`scores.dsa`); el2n, grand and the uncertainty scores come from one pass over the training set in eval mode
after the last epoch, without augmentation; forgetting events come from the correctness of every example
each time it was seen in a training batch (once per epoch).

The scores are cached in `out/scores-<fingerprint>.safetensors`, the fingerprint hashing everything that
changes them (data, model, layout, the `scores` section, seed, DSA strategy), so that files made for
different settings coexist. The file is rewritten atomically after each network, so an interrupted
computation resumes at the next network; a complete file is loaded without training. A file that cannot be
used (unreadable, made for another setting, or whose stored labels differ from today's training labels) is
a stale cache: it is recomputed from scratch and overwritten (with a warning), never trusted. So is a
file whose tensors do not match the checksum written with them (integrity.py), or that holds NaN or Inf.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import integrity
from ..config import Config
from ..data.augment import DSA
from ..data.prepared import PreparedData
from ..errors import CorruptFileError
from ..identity import mismatch, settings
from ..models import ParamLayout
from ..networks import seeded_model
from ..parallel import Task, executor_for
from ..training import train_epoch
from ..utils import generator, locks

FORMAT = "distillset.scores/1"
SCORES_FIX = "delete it: `distillset scores` (or the run that needs it) computes the scores again"
KINDS = ("el2n", "grand", "forgetting", "entropy", "least_confidence", "margin")
SCORING_BATCH = 1024

# ------------------------------------------------------------------------------------------------
# the scores (pure functions of a network's outputs; N examples -> a float tensor of shape N)


def el2n(logits: Tensor, y: Tensor) -> Tensor:
    """The L2 norm of the error vector, `||softmax(logits) - onehot(y)||_2`."""
    return _error(logits, y).norm(dim=1)


def grand(logits: Tensor, y: Tensor, features: Tensor) -> Tensor:
    """The norm of the per-sample cross-entropy gradient w.r.t. the last Linear layer's weight and bias.

    For `logits = W h + b` the gradients are `g h^T` and `g` with `g = softmax(logits) - onehot(y)`, so the
    norm is `||g|| * sqrt(1 + ||h||^2)`; `features` are the penultimate features `h` (N x D).
    """
    h2 = features.float().pow(2).sum(dim=1)
    return _error(logits, y).norm(dim=1) * torch.sqrt(1 + h2)


def entropy(logits: Tensor) -> Tensor:
    """The entropy `-sum_k p_k log p_k` of the predicted distribution (in nats)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def least_confidence(logits: Tensor) -> Tensor:
    """`1 - max_k p_k`."""
    return 1 - F.softmax(logits.float(), dim=1).max(dim=1).values


def margin(logits: Tensor) -> Tensor:
    """`1 - (p_top1 - p_top2)`: 0 for a certain prediction, 1 for a tie at the top."""
    if logits.shape[1] < 2:
        return torch.zeros(logits.shape[0], device=logits.device)
    top = F.softmax(logits.float(), dim=1).topk(2, dim=1).values
    return 1 - (top[:, 0] - top[:, 1])


def forgetting_events(correct: Tensor) -> Tensor:
    """Forgetting events from a T x N bool matrix: whether example n was classified correctly each time it
    was seen in a training batch, in order (one row per epoch).

    The score is the number of transitions correct -> incorrect between consecutive rows. An example never
    classified correctly in any row scores T, more than any learned example can (at most T // 2 events):
    like Toneva et al., never-learned examples count as the most forgettable.
    """
    correct = correct.bool()
    t = correct.shape[0]
    events = (correct[:-1] & ~correct[1:]).sum(dim=0).float()
    return torch.where(correct.any(dim=0), events, torch.full_like(events, float(t)))


def _error(logits: Tensor, y: Tensor) -> Tensor:
    p = F.softmax(logits.float(), dim=1)
    return p - F.one_hot(y.long(), p.shape[1]).to(p.dtype)


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two score vectors (ranks by a stable sort: ties are not averaged)."""

    def ranks(v: Tensor) -> Tensor:
        return torch.argsort(torch.argsort(v, stable=True), stable=True).double()

    ra, rb = ranks(a.flatten()), ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom > 0 else float("nan")


# ------------------------------------------------------------------------------------------------
# the result


@dataclass
class DifficultyScores:
    """The scores of every kind, one row per scoring network (K x N, on the CPU), and the training labels."""

    scores: dict[str, Tensor]
    labels: Tensor
    fingerprint: str
    identity: dict = field(repr=False)
    path: Path | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS

    @property
    def num_models(self) -> int:
        return int(self.scores[KINDS[0]].shape[0])

    def values(self, kind: str) -> Tensor:
        """The score of each training example (N), averaged over the networks."""
        if kind not in self.scores:
            raise ValueError(f"unknown difficulty score {kind!r}; valid: {', '.join(KINDS)}")
        return self.scores[kind].mean(dim=0)

    def order(self, kind: str, num_classes: int) -> list[Tensor]:
        """Per class, the indices into the training set of that class's examples from easy to hard
        (ascending score; ties keep the order of the indices)."""
        v = self.values(kind)
        out = []
        for c in range(num_classes):
            idx = torch.nonzero(self.labels == c).flatten()
            out.append(idx[torch.sort(v[idx], stable=True).indices])
        return out

    def summary_lines(self) -> list[str]:
        """One line per kind: mean, min, max of the averaged score and its rank correlation with el2n."""
        ref = self.values("el2n")
        width = max(map(len, KINDS))
        lines = []
        for kind in KINDS:
            v = self.values(kind)
            lines.append(
                f"{kind:<{width}}  mean {v.mean().item():.3f}  min {v.min().item():.3f}  "
                f"max {v.max().item():.3f}  rank corr. with el2n {spearman(v, ref):.2f}"
            )
        return lines


# ------------------------------------------------------------------------------------------------
# computing and caching


def scores_identity(cfg: Config, data: PreparedData) -> dict:
    """Everything that changes the scores."""
    probe = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "scores", 0)
    identity = {
        "data": data.fingerprint(),
        "model": probe.spec,
        "layout": ParamLayout.from_model(probe).fingerprint(),
        "scores": settings(cfg.scores),
        "seed": cfg.seed,
        "dsa_strategy": data.dsa_strategy if cfg.scores.dsa else None,
    }
    return json.loads(json.dumps(identity))  # as stored: tuples become lists


def _rounded(obj: object) -> object:
    """Floats to 6 significant digits: the preprocessing statistics differ in their last bits between
    thread counts and machines, and must not change the file name."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def scores_fingerprint(identity: dict) -> str:
    """16 hex digits of blake2b over the identity as sorted JSON (floats rounded, see `_rounded`)."""
    text = json.dumps(_rounded(identity), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _read(path: Path, identity: dict, labels: Tensor) -> tuple[dict[str, Tensor], int] | None:
    """The finished rows of a usable file and their count; None (with a warning) for a stale one."""
    if not path.exists():
        return None
    try:
        tensors, metadata = integrity.read(path, SCORES_FIX)
        meta = json.loads(metadata["meta"])
    except CorruptFileError as e:
        reason = f"it is {e.problem}"
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        reason = f"it is unreadable ({e})"
    else:
        finished = meta.get("finished")
        diff = mismatch(meta.get("identity"), identity) if meta.get("format") == FORMAT else "format"
        stored = tensors.get("labels")
        if diff:
            reason = f"it was made with another setting: {diff}"
        elif stored is None or not torch.equal(stored.long(), labels.long()):
            reason = "its labels differ from the training labels"
        elif not isinstance(finished, int) or any(
            tuple(tensors.get(k, torch.empty(0)).shape) != (finished, labels.numel()) for k in KINDS
        ):
            reason = "its tensors do not match its record"
        elif any(integrity.nonfinite(tensors[k]) for k in KINDS):
            reason = "it holds NaN or Inf scores"
        else:
            return {k: tensors[k] for k in KINDS}, finished
    warnings.warn(f"recomputing the difficulty scores in {path}: {reason}.", stacklevel=3)
    return None


def _write(path: Path, scores: dict[str, Tensor], labels: Tensor, identity: dict, finished: int) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in scores.items()}
    tensors["labels"] = labels.detach().to("cpu", torch.int64).contiguous()
    meta = json.dumps({"format": FORMAT, "identity": identity, "finished": finished})
    integrity.save(path, tensors, {"meta": meta})


def score_one_model(cfg: Config, data: PreparedData, k: int) -> dict[str, Tensor]:
    """Train scoring network k and score every training example with it: {kind: N scores} on the CPU."""
    device = data.train_x.device
    scfg = cfg.scores
    x, y = data.train_x, data.train_y
    model = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "scores", k).to(device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=scfg.lr,
        momentum=scfg.momentum,
        weight_decay=scfg.weight_decay,
        nesterov=scfg.nesterov and scfg.momentum > 0,  # torch refuses Nesterov without momentum
    )
    order_gen = generator(cfg.seed, "scores", k, "order")
    aug_gen = generator(cfg.seed, "scores", k, "dsa")
    aug = DSA(data.dsa_strategy) if scfg.dsa else None

    correct = torch.zeros(scfg.epochs, x.shape[0], dtype=torch.bool, device=device)
    for epoch in range(scfg.epochs):
        row = correct[epoch]

        def record(idx: Tensor, logits: Tensor, row: Tensor = row) -> None:
            row[idx] = logits.argmax(dim=1) == y[idx]

        loss, _ = train_epoch(model, x, y, opt, scfg.batch, order_gen, aug, aug_gen, on_batch=record)
        if loss != loss:
            raise FloatingPointError(
                f"scoring network {k} diverged (NaN loss at epoch {epoch + 1}); lower scores.lr."
            )

    model.eval()
    parts: dict[str, list[Tensor]] = {kind: [] for kind in KINDS if kind != "forgetting"}
    with torch.no_grad():
        for start in range(0, x.shape[0], SCORING_BATCH):
            xb, yb = x[start : start + SCORING_BATCH], y[start : start + SCORING_BATCH]
            feats = model.forward_features(xb)
            logits = model.forward_head(feats)
            parts["el2n"].append(el2n(logits, yb))
            parts["grand"].append(grand(logits, yb, feats))
            parts["entropy"].append(entropy(logits))
            parts["least_confidence"].append(least_confidence(logits))
            parts["margin"].append(margin(logits))
    out = {kind: torch.cat(v).cpu() for kind, v in parts.items()}
    out["forgetting"] = forgetting_events(correct).cpu()
    return {kind: out[kind] for kind in KINDS}


def _score_task(cfg: Config, data: PreparedData, k: int) -> dict[str, Tensor]:
    return score_one_model(cfg, data, k)  # looked up when called: tests replace it


@locks("out", "scores")  # one process at a time computes into `out`
def compute_scores(
    cfg: Config, data: PreparedData, out: str | Path, progress: bool = True
) -> DifficultyScores:
    """The difficulty scores of `data.train_x` for `cfg`: loaded from `out` when computed before, else
    computed (resuming at the first unfinished network) and stored there; see the module docstring."""
    identity = scores_identity(cfg, data)
    fp = scores_fingerprint(identity)
    path = Path(out) / f"scores-{fp}.safetensors"
    labels = data.train_y.detach().to("cpu", torch.int64)
    n, num_models = labels.numel(), cfg.scores.num_models

    rows: dict[str, Tensor] = {kind: torch.empty(0, n) for kind in KINDS}
    finished = 0
    stored = _read(path, identity, labels)
    if stored is not None:
        rows, finished = stored
    if finished < num_models:
        # One task per network. The file holds the first `finished` networks: results that arrive out of
        # order wait until the networks before them are in, then are committed together.
        arrived: dict[int, dict[str, Tensor]] = {}

        def commit(key: str, new: dict[str, Tensor]) -> None:
            nonlocal rows, finished
            arrived[int(key.rpartition("-")[2])] = new
            if finished not in arrived:
                return
            while finished in arrived:
                new = arrived.pop(finished)
                rows = {kind: torch.cat([rows[kind], new[kind][None]]) for kind in KINDS}
                finished += 1
            _write(path, rows, labels, identity, finished)

        executor_for(cfg.executor).map(
            _score_task,
            [Task(f"scores-{k}", (k,)) for k in range(finished, num_models)],
            shared=(cfg, data),
            desc="scores",
            progress=progress,
            device=cfg.device,
            on_result=commit,
        )
    rows = {kind: v[:num_models] for kind, v in rows.items()}
    return DifficultyScores(scores=rows, labels=labels, fingerprint=fp, identity=identity, path=path)
