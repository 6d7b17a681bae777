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
import statistics
from pathlib import Path

import torch
from torch import Tensor

from .baseline import coreset_features, coreset_indices
from .config import Config, DataConfig, EvalConfig
from .data.augment import DSA
from .data.prepared import PreparedData, prepare
from .errors import StoreError
from .networks import seeded_model
from .parallel import Task, executor_for
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
    if loss != loss:
        raise FloatingPointError(f"evaluation diverged (NaN loss) with lr={lr:g}; pass a smaller eval.lr.")
    return loss


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
    checkpoints = set(range(ecfg.val_every, epochs + 1, ecfg.val_every)) | {epochs}
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


def network_task(
    cfg: Config,
    data: PreparedData,
    synthetic: EpochData,
    name: str,
    subset: Tensor | str | None,
    lr: float,
    epochs: int,
    init_tags: tuple,
    recipe_tags: tuple,
) -> dict:
    """One evaluation network, an executor task: a fresh `name` with the initial weights of `init_tags`,
    trained with the evaluation recipe (its order and DSA draws from `recipe_tags`) on the synthetic set
    (`subset` None: its images, or a distributional set's means and fresh samples drawn for this
    network), on the real images `subset` (training-set indices: a baseline) or on the whole training
    set (`subset` "all"); `train_and_test`'s row."""
    model = _fresh_model(cfg, name, data, init_tags)
    ecfg = cfg.eval
    if subset is None:
        source = synthetic.for_network(*recipe_tags)
    elif isinstance(subset, str):
        source = FixedData(data.train_x, data.train_y)
    else:  # a baseline: real images with the distilled set's recipe
        idx = subset.to(data.train_x.device)
        source = FixedData(data.train_x[idx], data.train_y[idx])
    return train_and_test(model, source, None, data, ecfg, lr, epochs, recipe_tags, cfg.seed)


def evaluation_tasks(
    cfg: Config, data: PreparedData, ipc: int, lr: float, base_lr: float, coreset_idx: dict[str, Tensor]
) -> list[Task]:
    """Every network of an evaluation, keyed `model/kind/run`: per architecture and run, the distilled
    set's network, the random-real baseline's (a fresh subset per run) and each coreset baseline's (one
    fixed subset), all three baselines from the distilled set's initial weights of that run with its
    recipe; then the full-data reference."""
    ecfg = cfg.eval

    def baseline(kind: str, name: str, r: int, idx: Tensor) -> Task:
        """Baseline `kind`'s network r: the real images `idx`, trained as long as the distilled set's
        network r, with its schedule and DSA, from its initial weights (only the lr is the baselines')."""
        tag = "baseline" if kind == "random" else f"baseline-{kind}"
        return Task(
            f"{name}/{kind}/{r}", (name, idx.cpu(), base_lr, ecfg.epochs, ("eval", name, r), (tag, name, r))
        )

    tasks = []
    for name in ecfg.models:
        for r in range(ecfg.runs):
            init = ("eval", name, r)
            tasks.append(Task(f"{name}/distilled/{r}", (name, None, lr, ecfg.epochs, init, init)))
            if ecfg.baseline:
                gen = generator(cfg.seed, "baseline", r)
                tasks.append(
                    baseline("random", name, r, random_real_indices(data.train_y, ipc, data.num_classes, gen))
                )
            tasks += [baseline(method, name, r, idx) for method, idx in coreset_idx.items()]
        if ecfg.full_data:
            full = ("full", name)
            tasks.append(
                Task(f"{name}/full", (name, "all", ecfg.default_lr, ecfg.full_data_epochs, full, full))
            )
    return tasks


def data_config_of(art: DistilledSet, root: str | None = None) -> DataConfig:
    """The data section that rebuilds the artifact's dataset and splits (optionally from another root)."""
    if "config" not in art.meta:
        raise StoreError("the artifact's manifest has no config section; it was not made by distillset.")
    data = dict(art.meta["config"]["data"])
    if root is not None:
        data["root"] = root
    return DataConfig.model_validate(data)


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
    and the coreset baselines named in `cfg.eval.baselines` (herding, k-center: one fixed subset each, chosen
    in the features of one network trained on the full training set, see baseline.py).

    Returns the command-line contract's JSON object (accuracies as fractions in [0, 1]).
    """
    ecfg = cfg.eval
    if data is None:
        data = prepare(data_config_of(art, cfg.data.root), resolve_device(cfg.device))
    check_same_data(art, data)
    device = data.train_x.device
    ipc = art.baseline_ipc()  # the random-real baseline's images per class: equal storage
    lr = ecfg.lr or art.lr
    base_lr = ecfg.lr or ecfg.default_lr
    synthetic = art.epoch_data(cfg.seed, ("eval",), cfg.d3.eval_samples).to_device(device)

    coresets = list(dict.fromkeys(ecfg.baselines))
    coreset_idx: dict[str, Tensor] = {}
    if coresets:
        feats = coreset_features(cfg, data)  # once, shared by every coreset baseline
        for method in coresets:
            idx = coreset_indices(method, feats, data.train_y, ipc, data.num_classes)
            coreset_idx[method] = idx.to(device)

    report: dict = {
        "artifact": str(artifact_path) if artifact_path else None,
        "ipc": int(art.meta.get("ipc", ipc)),
        "method": art.meta.get("method"),
        "kind": art.kind,
        "results": {},
    }
    rows = executor_for(cfg.executor).map(
        network_task,
        evaluation_tasks(cfg, data, ipc, lr, base_lr, coreset_idx),
        shared=(cfg, data, synthetic),
        desc="evaluate",
        progress=progress,
        device=cfg.device,
    )

    def summary(name: str, kind: str) -> dict:
        return _summary([rows[f"{name}/{kind}/{r}"] for r in range(ecfg.runs)])

    report["results"] = {name: summary(name, "distilled") for name in ecfg.models}
    if ecfg.baseline:
        report["random_baseline"] = {name: summary(name, "random") for name in ecfg.models}
    if ecfg.full_data:
        report["full_data"] = {name: _summary([rows[f"{name}/full"]]) for name in ecfg.models}
    if coresets:
        report["baselines"] = {m: {name: summary(name, m) for name in ecfg.models} for m in coresets}
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
    return report


def real_storage(ipc: int, data: PreparedData) -> dict:
    """The storage of `ipc` real images per class with hard labels (a baseline's)."""
    return image_storage(ipc * data.num_classes, data.image_shape, data.num_classes)


CORESET_COLUMNS = {"herding": "herding (fixed subset)", "kcenter": "k-center (fixed subset)"}


def format_report(report: dict) -> str:
    """A plain-text table: accuracy (%) mean +- std per architecture, beside the random baseline."""
    method = report.get("method") or "distilled"
    if report.get("kind") == "distributional":
        cols = ["model", f"{method} ({report['storage']['ipc_equivalent']:.2f} IPC-equivalents)"]
        random_col = (
            f"random real (IPC {report.get('random_baseline_ipc')}: the same storage, a fresh subset per run)"
        )
    else:
        cols = ["model", f"{method} (IPC {report['ipc']})"]
        random_col = "random real (a fresh subset per run)"
    if "random_baseline" in report:
        cols.append(random_col)
    extra = list(report.get("baselines", {}))
    cols += [CORESET_COLUMNS.get(method, f"{method} (fixed subset)") for method in extra]
    if "full_data" in report:
        cols.append("full data")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]

    def cell(s: dict) -> str:
        return f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f}"

    for name, res in report["results"].items():
        row = [name, cell(res)]
        if "random_baseline" in report:
            row.append(cell(report["random_baseline"][name]))
        row += [cell(report["baselines"][method][name]) for method in extra]
        if "full_data" in report:
            row.append(f"{100 * report['full_data'][name]['mean']:.2f}")
        lines.append(" | ".join(row))
    runs = len(next(iter(report["results"].values()))["runs"]) if report["results"] else 0
    nets = "1 fresh network" if runs == 1 else f"{runs} fresh networks"
    lines.append(f"test accuracy (%), mean +- std over {nets}; checkpoints chosen on validation.")
    return "\n".join(lines)
