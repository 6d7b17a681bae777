"""The evaluation protocol: train fresh networks on a distilled set, test on the real test set.

Protocol (MTT/DATM/PAD): SGD with the artifact's learned lr (or a given one), momentum 0.9, weight
decay 5e-4, lr x0.1 after `decay_at` of the epochs, DSA on every batch, cross-entropy (soft
cross-entropy for label logits). Deviation from the authors, on purpose: they report the maximum
test accuracy over checkpoints, i.e. they select on the test set. Here the checkpoint is chosen on the
validation split held out of the training set, and its test accuracy is reported; the authors'
statistic can be printed beside it, labelled as such. Every result comes with the random-real subset
of the same IPC trained with the same recipe.
"""

from __future__ import annotations

import copy
import math
import statistics
from pathlib import Path

import torch
from torch import Tensor

from .baseline import CORESET_METHODS, coreset_features, coreset_indices
from .config import Config, DataConfig, EvalConfig, validate
from .data.augment import DSA
from .data.prepared import PreparedData, prepare
from .ensemble import MAX_MEMBERS, Member, Stacked, pays, train_epoch_together
from .errors import ConfigError, StoreError
from .networks import seeded_model
from .parallel import Task, executor_for
from .soft_labels import labeller_for
from .synthetic import DistilledSet, LatentSet, random_real_indices
from .synthetic.artifact import FixedData
from .synthetic.latent_artifact import LatentEpochs, image_storage
from .training import accuracy, train_epoch
from .utils import generator, resolve_device

EpochData = FixedData | LatentEpochs  # epoch -> (images, targets)


def _recipe(model, ecfg: EvalConfig, lr: float, data: PreparedData, seed_tags: tuple, seed: int):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=ecfg.momentum, weight_decay=ecfg.weight_decay)
    order_gen = generator(seed, *seed_tags, "order")
    aug_gen = generator(seed, *seed_tags, "dsa")
    aug = DSA(data.dsa_strategy) if ecfg.dsa else None
    return opt, order_gen, aug, aug_gen


def _epoch(model, source, ecfg, opt, epoch, epochs, lr, order_gen, aug, aug_gen) -> float:  # noqa: ANN001
    decay_epoch = int(epochs * ecfg.decay_at)
    if epoch == decay_epoch and decay_epoch > 0:
        for group in opt.param_groups:
            group["lr"] *= 0.1
    x, y = source(epoch)
    loss, _ = train_epoch(model, x, y, opt, ecfg.batch, order_gen, aug, aug_gen)
    _check_finite(loss, lr)
    return loss


def _check_finite(loss: float, lr: float) -> None:
    if loss != loss:
        raise FloatingPointError(f"evaluation diverged (NaN loss) with lr={lr:g}; pass a smaller eval.lr.")


def _checkpoints(ecfg: EvalConfig, epochs: int) -> set[int]:
    """The epochs after which a network is validated: every `val_every`, and the last."""
    return set(range(ecfg.val_every, epochs + 1, ecfg.val_every)) | {epochs}


def as_source(x: Tensor | EpochData, y: Tensor | None = None) -> EpochData:
    """The training data of each epoch: `x` itself when it is a source (a distributional set's
    means plus fresh samples), else the fixed images `x` with targets `y`."""
    return x if y is None else FixedData(x, y)


def validation_accuracy(
    model: torch.nn.Module,
    x: Tensor | EpochData,
    y: Tensor | None,
    data: PreparedData,
    ecfg: EvalConfig,
    lr: float,
    epochs: int,
    seed_tags: tuple,
    seed: int,
) -> float:
    """Train with the evaluation recipe and return the final validation accuracy; never looks at the test
    set (what distillation uses to choose its best synthetic set). `x` is images (with targets `y`) or
    an epoch source (`y` None)."""
    source = as_source(x, y)
    opt, order_gen, aug, aug_gen = _recipe(model, ecfg, lr, data, seed_tags, seed)
    for epoch in range(epochs):
        _epoch(model, source, ecfg, opt, epoch, epochs, lr, order_gen, aug, aug_gen)
    return accuracy(model, data.val_x, data.val_y)


def train_and_test(
    model: torch.nn.Module,
    x: Tensor | EpochData,
    y: Tensor | None,
    data: PreparedData,
    ecfg: EvalConfig,
    lr: float,
    epochs: int,
    seed_tags: tuple,
    seed: int,
) -> dict:
    """Train `model` on (x, y) (or the epoch source `x`); choose the checkpoint with the best validation
    accuracy; test it."""
    source = as_source(x, y)
    opt, order_gen, aug, aug_gen = _recipe(model, ecfg, lr, data, seed_tags, seed)
    has_val = data.val_x.shape[0] > 0
    best_val, best_state, best_epoch = -1.0, None, epochs
    max_test = 0.0
    checkpoints = _checkpoints(ecfg, epochs)
    for epoch in range(epochs):
        _epoch(model, source, ecfg, opt, epoch, epochs, lr, order_gen, aug, aug_gen)
        if epoch + 1 in checkpoints:
            if ecfg.authors_statistic:
                max_test = max(max_test, accuracy(model, data.test_x, data.test_y))
            if has_val:
                val = accuracy(model, data.val_x, data.val_y)
                if val > best_val:
                    best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    final_test = accuracy(model, data.test_x, data.test_y)
    if best_state is not None:
        model.load_state_dict(best_state)
    out = {
        "test": accuracy(model, data.test_x, data.test_y) if best_state is not None else final_test,
        "val": best_val if has_val else None,
        "epoch": best_epoch,
        "final_test": final_test,
    }
    if ecfg.authors_statistic:
        out["max_test_authors"] = max_test
    return out


def _summary(rows: list[dict]) -> dict:
    accs = [r["test"] for r in rows]
    return {
        "mean": statistics.fmean(accs),
        "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "runs": accs,
        "details": rows,
    }


def _fresh_model(cfg: Config, name: str, data: PreparedData, tags: tuple) -> torch.nn.Module:
    model = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, *tags, name=name)
    return model.to(data.train_x.device)


def _network(
    cfg: Config,
    data: PreparedData,
    sources: dict[str, EpochData],
    name: str,
    subset: Tensor | str | None,
    targets: Tensor | str | None,
    lr: float,
    epochs: int,
    init_tags: tuple,
    recipe_tags: tuple,
    aug: bool = True,
) -> tuple[torch.nn.Module, EpochData, EvalConfig]:
    """The fresh model, the epoch source and the recipe of one evaluation network (see `network_task`)."""
    model = _fresh_model(cfg, name, data, init_tags)
    ecfg = cfg.eval if aug else cfg.eval.model_copy(update={"dsa": False})
    if subset is None:
        source = sources[targets].for_network(*recipe_tags)
    elif isinstance(subset, str):
        source = FixedData(data.train_x, data.train_y)
    else:  # a baseline: real images with the distilled set's recipe
        idx = subset.to(data.train_x.device)
        labels = data.train_y[idx] if targets is None else targets.to(data.train_x.device)
        source = FixedData(data.train_x[idx], labels)
    return model, source, ecfg


def network_task(cfg: Config, data: PreparedData, sources: dict[str, EpochData], *args: object) -> dict:
    """One evaluation network, an executor task: a fresh `name` with the initial weights of `init_tags`,
    trained with the evaluation recipe (its order and DSA draws from `recipe_tags`; DSA off when not
    `aug`) on the synthetic set `sources[targets]` (`subset` None: "distilled", its own labels, or
    "label_hard", its images with hard labels; a distributional set's means and fresh samples are
    drawn for this network), on the real images `subset` (training-set indices: a baseline, with hard
    labels or the label logits `targets`) or on the whole training set (`subset` "all"); the arguments
    after `sources` are those of `_network`. Returns `train_and_test`'s row."""
    model, source, ecfg = _network(cfg, data, sources, *args)
    lr, epochs, recipe_tags = args[3], args[4], args[6]
    return train_and_test(model, source, None, data, ecfg, lr, epochs, recipe_tags, cfg.seed)


def ensemble_task(
    cfg: Config, data: PreparedData, sources: dict[str, EpochData], members: list[tuple[str, tuple]]
) -> dict[str, dict]:
    """Several evaluation networks of one architecture, epoch count and set size trained at once (see
    ensemble.py), each exactly as `network_task` would train it; {key: row}."""
    built = []
    for _key, args in members:
        model, source, ecfg = _network(cfg, data, sources, *args)
        lr, recipe_tags = args[3], args[6]
        _opt, order_gen, aug, aug_gen = _recipe(model, ecfg, lr, data, recipe_tags, cfg.seed)
        built.append(Member(model, source, lr, aug, order_gen, aug_gen))
    rows = train_and_test_ensemble(built, data, cfg.eval, members[0][1][4])
    return {key: row for (key, _args), row in zip(members, rows, strict=True)}


def evaluation_task(cfg: Config, data: PreparedData, sources: dict[str, EpochData], group: list) -> dict:
    """An executor task of the evaluation: one network (`network_task`) or an ensemble of them;
    {key: row}."""
    if len(group) == 1:
        key, args = group[0]
        return {key: network_task(cfg, data, sources, *args)}
    return ensemble_task(cfg, data, sources, group)


def train_and_test_ensemble(members: list[Member], data: PreparedData, ecfg: EvalConfig, epochs: int) -> list:
    """`train_and_test` for every member at once: the same epochs, decay, batches and checkpoints, each
    member's own data, order, DSA, lr and validation choice; a row per member."""
    stacked = Stacked([m.model for m in members], [m.lr for m in members], ecfg.momentum, ecfg.weight_decay)
    count = len(members)
    has_val = data.val_x.shape[0] > 0
    best_val, best_state, best_epoch = [-1.0] * count, [None] * count, [epochs] * count
    max_test = [0.0] * count
    checkpoints = _checkpoints(ecfg, epochs)
    decay_epoch = int(epochs * ecfg.decay_at)
    for epoch in range(epochs):
        if epoch == decay_epoch and decay_epoch > 0:
            stacked.scale_lr(0.1)
        rows = train_epoch_together(
            stacked,
            [m.source(epoch) for m in members],
            [m.order_gen for m in members],
            [m.aug for m in members],
            [m.aug_gen for m in members],
            ecfg.batch,
        )
        for m, (loss, _) in zip(members, rows, strict=True):
            _check_finite(loss, m.lr)
        # each member checked in its own model: a large shared input runs no faster stacked
        if epoch + 1 in checkpoints:
            for r, m in enumerate(members):
                state = stacked.state(r)
                stacked.load_into(m.model, state)
                if ecfg.authors_statistic:
                    max_test[r] = max(max_test[r], accuracy(m.model, data.test_x, data.test_y))
                if has_val:
                    val = accuracy(m.model, data.val_x, data.val_y)
                    if val > best_val[r]:
                        best_val[r], best_state[r], best_epoch[r] = val, state, epoch + 1
    rows = []
    for r, m in enumerate(members):
        final_test = accuracy(stacked.load_into(m.model, stacked.state(r)), data.test_x, data.test_y)
        test = final_test
        if best_state[r] is not None:
            test = accuracy(stacked.load_into(m.model, best_state[r]), data.test_x, data.test_y)
        row = {
            "test": test,
            "val": best_val[r] if has_val else None,
            "epoch": best_epoch[r],
            "final_test": final_test,
        }
        if ecfg.authors_statistic:
            row["max_test_authors"] = max_test[r]
        rows.append(row)
    return rows


def random_subsets(cfg: Config, data: PreparedData, ipc: int) -> list[Tensor]:
    """The random-real baseline's subset of each run (the soft-label baseline's images too)."""
    return [
        random_real_indices(data.train_y, ipc, data.num_classes, generator(cfg.seed, "baseline", r))
        for r in range(cfg.eval.runs)
    ]


def evaluation_tasks(
    cfg: Config,
    data: PreparedData,
    ipc: int,
    lr: float,
    base_lr: float,
    coreset_idx: dict[str, Tensor],
    soft_targets: list[Tensor] | None = None,
    ddranking: bool = False,
) -> list[Task]:
    """Every network of an evaluation, keyed `model/kind/run`: per architecture and run, the distilled
    set's network, the random-real baseline's (a fresh subset per run), the soft-label random
    baseline's (the same subset with the labeller's logits `soft_targets[r]`) and each coreset
    baseline's (one fixed subset), every baseline from the distilled set's initial weights of that run
    with its recipe; for DD-Ranking's scores (`ddranking`) the set with hard labels (when soft) and the
    set and its random baseline without DSA; then the full-data reference."""
    ecfg = cfg.eval
    subsets = random_subsets(cfg, data, ipc) if ecfg.baseline or soft_targets or ddranking else []

    def baseline(kind: str, name: str, r: int, idx: Tensor, targets: Tensor | None = None, aug=True) -> Task:
        """Baseline `kind`'s network r: the real images `idx`, trained as long as the distilled set's
        network r, with its schedule and DSA, from its initial weights (only the lr is the baselines')."""
        tag = "baseline" if kind in ("random", "no_aug_random") else f"baseline-{kind}"
        args = (name, idx.cpu(), targets, base_lr, ecfg.epochs, ("eval", name, r), (tag, name, r), aug)
        return Task(f"{name}/{kind}/{r}", args)

    tasks = []
    for name in ecfg.models:
        for r in range(ecfg.runs):
            init = ("eval", name, r)
            tasks.append(
                Task(f"{name}/distilled/{r}", (name, None, "distilled", lr, ecfg.epochs, init, init))
            )
            if ecfg.baseline:
                tasks.append(baseline("random", name, r, subsets[r]))
            if soft_targets is not None:
                tasks.append(baseline("soft_random", name, r, subsets[r], soft_targets[r]))
            tasks += [baseline(method, name, r, idx) for method, idx in coreset_idx.items()]
            if ddranking:
                if soft_targets is not None:  # the images alone: their argmax labels
                    args = (name, None, "label_hard", lr, ecfg.epochs, init, init)
                    tasks.append(Task(f"{name}/label_hard/{r}", args))
                args = (name, None, "distilled", lr, ecfg.epochs, init, init, False)
                tasks.append(Task(f"{name}/no_aug_distilled/{r}", args))
                targets = soft_targets[r] if soft_targets is not None else None
                tasks.append(baseline("no_aug_random", name, r, subsets[r], targets, aug=False))
        if ecfg.full_data or ddranking:
            full = ("full", name)
            args = (name, "all", None, ecfg.default_lr, ecfg.full_data_epochs, full, full)
            tasks.append(Task(f"{name}/full", args))
    return tasks


def _shape(task: Task, sources: dict[str, EpochData], data: PreparedData) -> tuple[int, bool]:
    """(images per epoch, soft targets) of an evaluation network's training data."""
    _name, subset, targets = task.args[:3]
    if subset is None:
        return sources[targets].shape()
    if isinstance(subset, str):
        return int(data.train_y.shape[0]), False
    return int(subset.numel()), targets is not None


def group_tasks(
    cfg: Config, data: PreparedData, sources: dict[str, EpochData], tasks: list[Task]
) -> list[Task]:
    """The evaluation's networks as executor tasks: alone, or in ensembles (`eval.ensemble`; "auto":
    where it pays, see ensemble.py) of the networks that share an architecture, an epoch count, a set
    size and a label kind, at most `MAX_MEMBERS` each. A task's args are its list of (key, network args)."""
    mode = cfg.eval.ensemble
    out, groups = [], {}
    for task in tasks:
        if isinstance(task.args[1], str) or mode == "off":  # the full-data reference trains alone
            out.append(Task(task.key, ([(task.key, task.args)],)))
            continue
        n, soft = _shape(task, sources, data)
        groups.setdefault((task.args[0], task.args[4], n, soft), []).append(task)
    for (name, _epochs, n, _soft), members in groups.items():
        probe = _fresh_model(cfg, name, data, ("probe",))
        buffered = any(True for _ in probe.buffers())  # running statistics: never together
        together = not buffered and (
            mode == "on" or pays(probe, data.train_x.device, min(cfg.eval.batch, n), data.image_shape)
        )
        if len(members) == 1 or not together:
            out += [Task(t.key, ([(t.key, t.args)],)) for t in members]
            continue
        for start in range(0, len(members), MAX_MEMBERS):
            chunk = members[start : start + MAX_MEMBERS]
            out.append(Task(f"{name}/ensemble/{n}/{chunk[0].key}", ([(t.key, t.args) for t in chunk],)))
    return out


def data_config_of(meta: dict, root: str | None = None) -> DataConfig:
    """The data section that rebuilds an artifact's dataset and splits from its manifest `meta`
    (optionally from another root)."""
    section = (meta.get("config") or {}).get("data")
    if not isinstance(section, dict):
        raise StoreError("the artifact's manifest has no config.data section; it was not made by distillset.")
    data = dict(section)
    if root is not None:
        data["root"] = root
    try:
        return validate({"data": data}).data
    except ConfigError as e:
        raise StoreError(f"the artifact's manifest has a bad config section: {e}") from e


def check_same_data(art: DistilledSet, data: PreparedData) -> None:
    want = {"fingerprint": art.meta.get("dataset", {}).get("fingerprint"), "split": art.meta.get("split")}
    have = data.fingerprint()
    for key, value in want.items():
        if value is not None and value != have[key]:
            raise StoreError(
                f"the dataset rebuilt for evaluation differs from the artifact's ({key}); "
                "point data.root at the same files."
            )


def evaluate(
    art: DistilledSet | LatentSet,
    cfg: Config,
    data: PreparedData | None = None,
    progress: bool = True,
    artifact_path: str | Path | None = None,
) -> dict:
    """Evaluate an artifact on every architecture in `cfg.eval.models`, with the random-real baseline
    and the baselines named in `cfg.eval.baselines`: herding and k-center (one fixed subset each, chosen
    in the features of one network trained on the full training set, see baseline.py); for a soft-label
    set, the random subsets with the same kind of soft labels (soft_random, see soft_labels.py); and
    DD-Ranking's label- and augmentation-robust scores (ddranking, see `ddranking_scores`).

    Returns the command-line contract's JSON object (accuracies as fractions in [0, 1]).
    """
    ecfg = cfg.eval
    if data is None:
        data = prepare(data_config_of(art.meta, cfg.data.root), resolve_device(cfg.device))
    check_same_data(art, data)
    device = data.train_x.device
    ipc = art.baseline_ipc()  # the random-real baseline's images per class: equal storage
    lr = ecfg.lr or art.lr
    base_lr = ecfg.lr or ecfg.default_lr
    sources = {"distilled": art.epoch_data(cfg.seed, ("eval",), cfg.d3.eval_samples).to_device(device)}
    soft = art.label_kind == "soft"
    ddranking = "ddranking" in ecfg.baselines
    if ddranking and not ecfg.baseline:
        raise ConfigError(
            "eval.baselines=ddranking compares with the random real subset: keep eval.baseline=true."
        )
    if soft and ddranking:
        hard = art.with_hard_labels().epoch_data(cfg.seed, ("eval",), cfg.d3.eval_samples)
        sources["label_hard"] = hard.to_device(device)

    report: dict = {
        "artifact": str(artifact_path) if artifact_path else None,
        "ipc": int(art.meta.get("ipc", ipc)),
        "method": art.meta.get("method"),
        "kind": art.kind,
        "label_kind": art.label_kind,
        "results": {},
    }
    notes: list[str] = []
    soft_targets = None
    if soft and ("soft_random" in ecfg.baselines or ddranking):
        labeller, why = labeller_for(art, cfg, data, artifact_path)
        if labeller is None:
            notes.append(f"soft-label random baseline left out: {why}.")
        else:
            soft_targets = [
                labeller(data.train_x[idx.to(device)], data.train_y[idx.to(device)]).cpu()
                for idx in random_subsets(cfg, data, ipc)
            ]
            report["soft_random_labels"] = {"labeller": labeller.describe, "experts": str(labeller.store)}
    if ddranking and soft and soft_targets is None:
        notes.append("DD-Ranking's scores left out: they need the soft-label random baseline.")
        ddranking = False

    coresets = [m for m in dict.fromkeys(ecfg.baselines) if m in CORESET_METHODS]
    coreset_idx: dict[str, Tensor] = {}
    if coresets:
        feats = coreset_features(cfg, data)  # once, shared by every coreset baseline
        for method in coresets:
            idx = coreset_indices(method, feats, data.train_y, ipc, data.num_classes)
            coreset_idx[method] = idx.to(device)

    tasks = evaluation_tasks(cfg, data, ipc, lr, base_lr, coreset_idx, soft_targets, ddranking)
    groups = executor_for(cfg.executor).map(
        evaluation_task,
        group_tasks(cfg, data, sources, tasks),
        shared=(cfg, data, sources),
        desc="evaluate",
        progress=progress,
        device=cfg.device,
    )
    rows = {key: row for group in groups.values() for key, row in group.items()}

    def summary(name: str, kind: str) -> dict:
        return _summary([rows[f"{name}/{kind}/{r}"] for r in range(ecfg.runs)])

    report["results"] = {name: summary(name, "distilled") for name in ecfg.models}
    if ecfg.baseline:
        report["random_baseline"] = {name: summary(name, "random") for name in ecfg.models}
    if soft_targets is not None:
        report["soft_random_baseline"] = {name: summary(name, "soft_random") for name in ecfg.models}
    if ecfg.full_data or ddranking:
        report["full_data"] = {name: _summary([rows[f"{name}/full"]]) for name in ecfg.models}
    if coresets:
        report["baselines"] = {m: {name: summary(name, m) for name in ecfg.models} for m in coresets}
    if ddranking:
        if soft:
            report["label_hard"] = {name: summary(name, "label_hard") for name in ecfg.models}
        report["no_aug"] = {
            kind: {name: summary(name, f"no_aug_{kind}") for name in ecfg.models}
            for kind in ("distilled", "random")
        }
        report["ddranking"] = ddranking_scores(report, ecfg.ddranking_w, ecfg.ddranking_gamma)
    report["lr"] = {"distilled": lr, "random_baseline": base_lr}
    # the three axes: accuracy (above), storage and compute
    report["storage"] = art.storage()
    if ecfg.baseline:
        report["random_baseline_ipc"] = ipc
        report["random_baseline_storage"] = real_storage(ipc, data)
    report["compute"] = art.meta.get("compute", {})
    report["protocol"] = {
        **ecfg.model_dump(),
        "checkpoint_selection": "validation" if data.val_x.shape[0] else "final",
    }
    if notes:
        report["notes"] = notes
    return report


def _normalised_score(x: float) -> float:
    """DD-Ranking's map of a difference of accuracies x in [-1, 1] to [0, 100]:
    100 (e^x - e^-1) / (e - e^-1)."""
    return 100 * (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def ddranking_scores(report: dict, w: float = 0.5, gamma: float = 0.5) -> dict:
    """DD-Ranking's scores, per architecture, from an evaluation's accuracies (fractions), run by run
    (run r's networks share their initial weights):

        HLR = Acc(real, hard) - Acc(syn, hard)              hard-label recovery (lower is better)
        IOR = Acc(syn, any) - Acc(random, any)              improvement over random
        LRS = 100 (e^a - e^-1) / (e - e^-1),  a = w IOR - (1 - w) HLR
        ARS = 100 (e^b - e^-1) / (e - e^-1),
              b = gamma (Acc(syn, aug) - Acc(random, aug))
                  + (1 - gamma) (Acc(syn, no aug) - Acc(random, no aug))

    "any" is the set's own labels (soft labels: the random subset gets the same kind, see
    soft_labels.py), "hard" the argmax labels of the set's, "real, hard" the full-data network (one, so
    it enters every run), "aug" the recipe with DSA and "no aug" the same without it.
    """
    out: dict = {"w": w, "gamma": gamma, "models": {}}
    random_any = report.get("soft_random_baseline") or report["random_baseline"]
    for name, res in report["results"].items():
        syn_any = res["runs"]
        syn_hard = report.get("label_hard", report["results"])[name]["runs"]
        real_hard = report["full_data"][name]["mean"]
        rdm_any = random_any[name]["runs"]
        syn_naug = report["no_aug"]["distilled"][name]["runs"]
        rdm_naug = report["no_aug"]["random"][name]["runs"]
        hlr = [real_hard - a for a in syn_hard]
        ior = [a - b for a, b in zip(syn_any, rdm_any, strict=True)]
        lrs = [_normalised_score(w * i - (1 - w) * h) for i, h in zip(ior, hlr, strict=True)]
        beta = [
            gamma * (a - b) + (1 - gamma) * (c - d)
            for a, b, c, d in zip(syn_any, rdm_any, syn_naug, rdm_naug, strict=True)
        ]
        out["models"][name] = {
            "hlr": _mean_std(hlr),
            "ior": _mean_std(ior),
            "lrs": _mean_std(lrs),
            "ars": _mean_std([_normalised_score(b) for b in beta]),
        }
    return out


def real_storage(ipc: int, data: PreparedData) -> dict:
    """The storage of `ipc` real images per class with hard labels (a baseline's)."""
    return image_storage(ipc * data.num_classes, data.image_shape, data.num_classes)


CORESET_COLUMNS = {"herding": "herding (fixed subset)", "kcenter": "k-center (fixed subset)"}


def result_columns(report: dict) -> list[tuple[str, dict]]:
    """Every result of an evaluation as (column title, {model: summary}), the distilled set first: the
    table of `format_report`, the run report and `compare`."""
    method = report.get("method") or "distilled"
    if report.get("kind") == "distributional":
        cols = [(f"{method} ({report['storage']['ipc_equivalent']:.2f} IPC-equivalents)", report["results"])]
        random_col = (
            f"random real (IPC {report.get('random_baseline_ipc')}: the same storage, a fresh subset per run)"
        )
    else:
        cols = [(f"{method} (IPC {report['ipc']})", report["results"])]
        random_col = "random real (a fresh subset per run)"
    if "random_baseline" in report:
        cols.append((random_col, report["random_baseline"]))
    if "soft_random_baseline" in report:
        cols.append(("random real, same soft labels", report["soft_random_baseline"]))
    if "label_hard" in report:
        cols.append((f"{method}, hard labels", report["label_hard"]))
    for kind, res in report.get("baselines", {}).items():
        cols.append((CORESET_COLUMNS.get(kind, f"{kind} (fixed subset)"), res))
    if "no_aug" in report:
        cols.append((f"{method}, no DSA", report["no_aug"]["distilled"]))
        cols.append(("random real, no DSA", report["no_aug"]["random"]))
    if "full_data" in report:
        cols.append(("full data", report["full_data"]))
    return cols


def format_report(report: dict) -> str:
    """A plain-text table: accuracy (%) mean +- std per architecture, beside every baseline; then
    DD-Ranking's scores and any notes."""
    cols = result_columns(report)
    lines = [
        " | ".join(["model", *(title for title, _ in cols)]),
        " | ".join("---" for _ in range(len(cols) + 1)),
    ]

    def cell(title: str, s: dict) -> str:
        if title == "full data":
            return f"{100 * s['mean']:.2f}"
        return f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f}"

    for name in report["results"]:
        lines.append(" | ".join([name, *(cell(title, res[name]) for title, res in cols)]))
    runs = len(next(iter(report["results"].values()))["runs"]) if report["results"] else 0
    nets = "1 fresh network" if runs == 1 else f"{runs} fresh networks"
    lines.append(f"test accuracy (%), mean +- std over {nets}; checkpoints chosen on validation.")
    if "ddranking" in report:
        for name, sc in report["ddranking"]["models"].items():
            hlr, ior, lrs, ars = (sc[k] for k in ("hlr", "ior", "lrs", "ars"))
            lines.append(
                f"DD-Ranking ({name}): LRS {lrs['mean']:.2f} +- {lrs['std']:.2f} (HLR "
                f"{100 * hlr['mean']:.2f}, IOR {100 * ior['mean']:.2f} points), "
                f"ARS {ars['mean']:.2f} +- {ars['std']:.2f}"
            )
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
