"""Typed, validated configuration: sections with the authors' key names, YAML presets, key=value overrides.

A config is resolved in three layers: a preset (or the user's YAML file, which may name a preset as
`base`), then `key=value` overrides from the command line, then validation. Unknown keys stop with the
nearest valid key; the fully resolved config, every default written out, goes into the run directory.
"""

from __future__ import annotations

import difflib
import reprlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.augment import parse_strategy
from .errors import ConfigError
from .models import list_models


def only_if(switch: str) -> dict:
    """Field metadata: the key changes a result only when the section's `switch` is away from its default
    (GSAM's radius with optimizer=sgd changes nothing); see identity.py."""
    return {"only_if": switch}


NO_RESULT = {"result": False}  # field metadata: the key never changes a result (see identity.py)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    name: str = "digits"
    root: str | None = None  # a directory or file with the data; None = the dataset's default source
    ipc: int = Field(1, ge=1)  # images per class of the distilled set
    val_size: float = Field(0.1, ge=0)  # fraction (< 1) or count (>= 1) held out of train for validation
    test_size: float = Field(0.2, gt=0)  # only for datasets without an official test split
    split_seed: int = 0  # fixed apart from `seed`, so that every run sees the same test set
    train_limit: int | None = Field(None, ge=1)  # a seeded, class-stratified training subset
    image_size: int | None = None  # resize folder images to this size
    zca: bool = False  # ZCA whitening (CIFAR/Tiny in MTT/DATM/PAD) instead of mean/std
    dsa_strategy: str | None = None  # None: the dataset's default (no flip for handwritten digits)

    @field_validator("dsa_strategy")
    @classmethod
    def _known_families(cls, v: str | None) -> str | None:
        if v is not None:
            parse_strategy(v)  # raises ValueError naming the valid families
        return v


def _on_off(v: Any) -> Any:
    """An auto|on|off key: YAML reads on/off as booleans."""
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def _known_model(name: str) -> str:
    known = list_models(include_aliases=True)
    if name.lower() not in known:
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}valid models: {', '.join(known)}")
    return name


class ModelConfig(Section):
    name: str = "convnet"
    width: int = Field(128, ge=1)
    depth: int | None = Field(None, ge=1)  # None: the field's default for the resolution
    norm: Literal["instance", "batch", "layer", "group", "none"] = "instance"
    pooling: Literal["avg", "max", "none"] = "avg"

    _check_name = field_validator("name")(_known_model)


class ExpertsConfig(Section):
    num_experts: int = Field(5, ge=1, json_schema_extra=NO_RESULT)
    train_epochs: int = Field(20, ge=1)
    lr_teacher: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_train: int = Field(256, ge=1)
    dsa: bool = True
    dtype: Literal["float32", "bfloat16"] = "float32"  # storage dtype of the snapshots
    checkpoint_every: int = Field(1, ge=1, json_schema_extra=NO_RESULT)  # epochs between checkpoints
    optimizer: Literal["sgd", "gsam"] = "sgd"  # gsam: FTD/DATM's experts (sharpness-aware)
    rho: float = Field(0.01, ge=0, json_schema_extra=only_if("optimizer"))  # GSAM's perturbation radius
    gsam_alpha: float = Field(
        0.3, ge=0, json_schema_extra=only_if("optimizer")
    )  # GSAM's weight on the gradient orthogonal to the perturbed one
    # PAD's data selection: train on a curriculum of each class's easy-to-hard order (see experts/curriculum)
    curriculum: bool = False
    difficulty: Literal["el2n", "grand", "forgetting", "entropy", "least_confidence", "margin"] = Field(
        "el2n", json_schema_extra=only_if("curriculum")
    )
    init_ratio: float = Field(
        0.75, gt=0, le=1, json_schema_extra=only_if("curriculum")
    )  # epoch 0 trains on the easiest init_ratio of each class
    add_end_epoch: int = Field(
        20, ge=1, json_schema_extra=only_if("curriculum")
    )  # ... growing linearly to all of it at this epoch
    rm_epoch_first: int = Field(
        40, ge=0, json_schema_extra=only_if("curriculum")
    )  # after this epoch, drop the easiest rm_easy_ratio_first
    rm_epoch_second: int = Field(
        60, ge=0, json_schema_extra=only_if("curriculum")
    )  # after this epoch, drop the easiest rm_easy_ratio_second
    rm_easy_ratio_first: float = Field(0.1, ge=0, lt=1, json_schema_extra=only_if("curriculum"))
    rm_easy_ratio_second: float = Field(0.2, ge=0, lt=1, json_schema_extra=only_if("curriculum"))
    # AST's smooth experts (see experts/smooth): the clipping loss, the input-gradient penalty, a step decay
    clip_loss: bool = False  # scale the cross-entropy by c_e = 0.5 + 0.5 e / E over the first E epochs
    clip_fraction: float = Field(
        0.2, gt=0, le=1, json_schema_extra=only_if("clip_loss")
    )  # E = max(1, round(fraction * epochs)); AST 10/50
    grad_penalty: float = Field(0.0, ge=0)  # lambda of the input-gradient penalty (AST: 2)
    grad_penalty_norm: Literal["channel", "image"] = Field(
        "channel", json_schema_extra=only_if("grad_penalty")
    )  # ||d(sum_k f_k)/dx|| per pixel or per image
    lr_decay: float = Field(1.0, gt=0, le=1)  # lr x lr_decay from epoch int(lr_decay_at * train_epochs) on
    lr_decay_at: float = Field(0.5, gt=0, lt=1, json_schema_extra=only_if("lr_decay"))
    # experts trained at once, K to a stacked model (see experts/ensemble.py): the same trajectories up to
    # float rounding, so not part of a store's identity; auto: on CUDA (never on the CPU), on, or off
    ensemble: Literal["auto", "on", "off"] = Field("auto", json_schema_extra=NO_RESULT)

    _ensemble_on_off = field_validator("ensemble", mode="before")(_on_off)

    @model_validator(mode="after")
    def _curriculum_order(self) -> ExpertsConfig:
        if self.curriculum and not self.add_end_epoch <= self.rm_epoch_first <= self.rm_epoch_second:
            raise ValueError(
                "the curriculum's epochs must satisfy add_end_epoch <= rm_epoch_first <= rm_epoch_second "
                f"(got {self.add_end_epoch}, {self.rm_epoch_first}, {self.rm_epoch_second})"
            )
        return self


class ScoresConfig(Section):
    """Difficulty scores (PAD's data selection), each averaged over `num_models` briefly trained networks.

    Defaults are DeepCore's: 10 models, SGD lr 0.1, momentum 0.9 (Nesterov), weight decay 5e-4, batch 128,
    40 epochs. CPU presets train fewer models for fewer epochs.
    """

    num_models: int = Field(10, ge=1)
    epochs: int = Field(40, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = True
    batch: int = Field(128, ge=1)
    dsa: bool = True  # augment the scoring networks' training batches (never the scoring pass)


class ExecutorConfig(Section):
    """Where the parallel stages run (see parallel.py); no key changes a result."""

    kind: Literal["local", "ray"] = Field("local", json_schema_extra=NO_RESULT)
    address: str | None = Field(None, json_schema_extra=NO_RESULT)  # a Ray cluster: "auto", "host:port"
    cpus_per_task: float = Field(1.0, gt=0, json_schema_extra=NO_RESULT)
    gpus_per_task: float = Field(0.0, ge=0, json_schema_extra=NO_RESULT)  # fractions share one GPU
    torch_threads: int | None = Field(None, ge=1, json_schema_extra=NO_RESULT)  # default: cpus_per_task
    local_cpus: int | None = Field(None, ge=1, json_schema_extra=NO_RESULT)  # a local runtime's CPUs
    local_gpus: int | None = Field(None, ge=0, json_schema_extra=NO_RESULT)  # a local runtime's GPUs
    max_retries: int = Field(3, ge=0, json_schema_extra=NO_RESULT)  # per task whose worker dies
    # the run directory is on storage every worker sees: tasks keep partial checkpoints there
    shared_storage: bool = Field(True, json_schema_extra=NO_RESULT)


class D3Config(Section):
    """D3's distributional set and its second objective (see synthetic/distributional, objectives/mmd,
    federated.py); the trajectory step takes the distill section's keys (syn_steps, lr_lr, lr_init: alpha0).

    Defaults are the authors' 1 IPC-equivalent ImageNet-1K setting.
    """

    decoder: Literal["small", "medium", "large"] = "small"
    lpc: int = Field(1, ge=1)  # latent priors per class
    z_dim: int = Field(64, ge=1)
    kernel_num: int | None = Field(None, ge=1)  # the decoder's top width; None: 256 / 512 / 1024 by size
    lr_latent: float = Field(3e-4, gt=0)
    momentum_latent: float = Field(0.5, ge=0, lt=1)
    lr_decode: float = Field(3e-4, gt=0)  # Adam
    decoder_weight_decay: float = Field(1e-5, ge=0)
    mmd_weight: float = Field(1.0, ge=0)  # 0: no MMD step
    mmd_samples: int = Field(30, ge=1)  # per class; s = mmd_samples // lpc draws of each prior
    subtasks: int = Field(1, ge=1)  # K contiguous class blocks, each distilled alone
    label_epoch: int | None = Field(9, ge=0)  # the all-class labelling expert's snapshot; None: hard labels
    eval_samples: int = Field(1, ge=0)  # fresh samples per prior per epoch, beside the decoded means

    @model_validator(mode="after")
    def _enough_samples(self) -> D3Config:
        if self.mmd_weight > 0 and (self.mmd_samples // self.lpc) * self.lpc < 2:
            raise ValueError(
                f"the MMD step needs (mmd_samples // lpc) * lpc >= 2 samples per class (got mmd_samples="
                f"{self.mmd_samples}, lpc={self.lpc})"
            )
        return self


class EvalConfig(Section):
    runs: int = Field(5, ge=1)  # fresh networks per architecture
    epochs: int = Field(300, ge=1)  # the field uses 1000 (lr x0.1 at the half)
    models: list[str] = Field(default_factory=lambda: ["convnet"])
    lr: float | None = Field(None, gt=0)  # None: the artifact's learned lr, else `default_lr`
    default_lr: float = Field(0.01, gt=0)  # for artifacts without a learned lr (random real, DC, DM)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch: int = Field(256, ge=1)
    dsa: bool = True
    decay_at: float = Field(0.5, gt=0, le=1)  # fraction of epochs after which lr is multiplied by 0.1
    val_every: int = Field(50, ge=1)  # epochs between validation checkpoints (plus the last)
    baseline: bool = True  # the random-real subset with the same IPC and recipe, beside every result
    full_data: bool = False  # also train on all of the training data, as a reference
    full_data_epochs: int = Field(30, ge=1)
    authors_statistic: bool = False  # also report the max test accuracy over checkpoints (as the authors do)
    # further baselines beside the random one: coresets of real images chosen in a trained network's
    # feature space (see baseline.py): herding (DC's tables) and k-center (greedy farthest point);
    # soft_random, for a soft-label set: the random real subsets with the same kind of soft labels, from
    # the labeller that made the set's (see soft_labels.py); ddranking: DD-Ranking's label-robust and
    # augmentation-robust scores (the full-data network, the set with hard labels, both without DSA)
    baselines: list[Literal["herding", "kcenter", "soft_random", "ddranking"]] = Field(
        default_factory=lambda: ["soft_random"]
    )
    label_experts: str | None = None  # the expert store that labels soft_random (default: the artifact's)
    # networks of one architecture, epoch count and set size trained at once (see ensemble.py): auto where
    # it pays (CUDA; small batches on the CPU), on, or off (one by one)
    ensemble: Literal["auto", "on", "off"] = "auto"
    ddranking_w: float = Field(0.5, ge=0, le=1)  # LRS's weight of IOR against HLR
    ddranking_gamma: float = Field(0.5, ge=0, le=1)  # ARS's weight of the augmented difference

    @field_validator("models", "baselines", mode="before")
    @classmethod
    def _split_lists(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    _ensemble_on_off = field_validator("ensemble", mode="before")(_on_off)

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one architecture, e.g. convnet")
        return [_known_model(m) for m in v]


DC_ONLY = only_if("objective")  # gradient and distribution matching's keys: not for trajectory matching


class DistillConfig(Section):
    """The distillation loop and its objective: the authors' key names; defaults are MTT's.

    Keys marked `result=False` do not change what an iteration computes (a run may extend them); every
    other key enters the checkpoint's identity (see identity.py).
    """

    # trajectory (MTT, DATM, PAD, AST), gradient (DC, DSA), distribution (DM) or d3 (trajectory + MMD on
    # latent priors and a decoder): see objectives/
    objective: Literal["trajectory", "gradient", "distribution", "d3"] = "trajectory"
    iterations: int = Field(5000, ge=0, json_schema_extra=NO_RESULT)
    syn_steps: int = Field(20, ge=0)  # N, inner steps of the student per iteration
    expert_epochs: int = Field(2, ge=1)  # M, the target is the snapshot M epochs after the start
    min_start_epoch: int = Field(0, ge=0)
    max_start_epoch: int = Field(20, ge=1)  # start epochs are drawn from [min_start_epoch, upper)
    sequential_generation: bool = False  # DATM's difficulty-aligned window, growing during distillation
    current_max_start_epoch: int = Field(20, ge=1)  # the window's initial upper bound
    expansion_end_epoch: int = Field(1000, ge=1)  # iteration at which the window reaches max_start_epoch
    lr_img: float = Field(1000.0, gt=0)
    lr_lr: float = Field(1e-5, ge=0)
    lr_y: float = Field(2.0, ge=0)
    lr_init: float | None = Field(None, gt=0)  # the synthetic lr's start; None: experts.lr_teacher
    momentum_img: float = Field(0.5, ge=0, lt=1)
    momentum_lr: float = Field(0.5, ge=0, lt=1)
    momentum_y: float = Field(0.9, ge=0, lt=1)
    batch_syn: int | None = Field(None, ge=1)  # synthetic images per inner step; None: all of them
    inner_momentum: float = Field(0.0, ge=0, lt=1)  # heavy-ball momentum of the student (AST: 0.9)
    dsa: bool = True  # DSA on every inner step
    engine: Literal["unroll", "tesla", "adjoint"] = "adjoint"
    # random real images, ones expert 0 classifies correctly (DATM), k-means representatives (AST), or
    # N(0, 1) noise (DC)
    init: Literal["real", "correct", "representative", "noise"] = "real"
    soft_label: bool = False  # learn label logits initialised from the experts (DATM)
    threshold: float | None = Field(None, gt=0)  # skip the update when the loss exceeds this (DATM: 1.0)
    max_experts: int | None = Field(None, ge=1)  # use only the first experts of the store
    eval_every: int = Field(100, ge=1, json_schema_extra=NO_RESULT)  # iterations between validation checks
    eval_runs: int = Field(1, ge=1)  # fresh networks per validation check
    eval_epochs: int = Field(100, ge=1)  # epochs per validation network (the eval section's recipe)
    checkpoint_every: int = Field(20, ge=1, json_schema_extra=NO_RESULT)  # between resumable checkpoints
    # PAD's parameter selection: match only the deep parameters (see objectives/trajectory)
    depth_ratio: float = Field(0.0, ge=0, lt=1)  # drop the leading fraction of the flat parameter vector
    mask: Literal["flat", "layers"] = "flat"  # flat: cut at int(depth_ratio * P); layers: whole layers only
    loss_ratio: float = Field(0.0, ge=0, lt=1)  # the authors' later variant: drop the smallest errors
    # AST's alignment of student and expert (see inner/alignment)
    balance_loss: bool = False  # weight the inner loss by the log-5 factor of the start epoch
    intermediate: bool = False  # also match theta_{k_i} to the expert's epoch t + i, k_i = (N // M) * i
    intermediate_beta: Literal["constant", "adaptive"] = Field(  # beta_i = 1, or i / M
        "constant", json_schema_extra=only_if("intermediate")
    )
    perturb_alpha: float = Field(0.0, ge=0)  # W + alpha (d * W) on the start point's conv weights (AST: 1)
    # Gradient matching (DC, DSA) and distribution matching (DM): see objectives/gradient, distribution
    outer_loop: int | None = Field(
        None, ge=1, json_schema_extra=DC_ONLY
    )  # DC: matching rounds per iteration; None: by IPC (§7)
    inner_loop: int | None = Field(
        None, ge=0, json_schema_extra=DC_ONLY
    )  # DC: epochs of network training on S between rounds
    dis_metric: Literal["ours", "mse", "cos"] = Field(
        "ours", json_schema_extra=DC_ONLY
    )  # DC's gradient distance
    batch_real: int = Field(
        256, ge=1, json_schema_extra=DC_ONLY
    )  # real images per class in each matching term
    lr_net: float = Field(
        0.01, gt=0, json_schema_extra=DC_ONLY
    )  # DC: SGD lr of the network trained on S between rounds
    batch_train: int = Field(256, ge=1, json_schema_extra=DC_ONLY)  # DC: batch of that training
    # PAD's data selection on the real pool of DC/DSA/DM: drop each class's easiest or hardest fraction
    # by a difficulty score (computed and cached as for PAD's experts, the scores section's recipe)
    drop_easy: float = Field(0.0, ge=0, lt=1)
    drop_hard: float = Field(0.0, ge=0, lt=1)
    difficulty: Literal["el2n", "grand", "forgetting", "entropy", "least_confidence", "margin"] = "el2n"

    @model_validator(mode="after")
    def _pool_left(self) -> DistillConfig:
        if self.drop_easy + self.drop_hard >= 1:
            raise ValueError(
                "drop_easy + drop_hard must leave part of each class "
                f"(got {self.drop_easy} + {self.drop_hard})"
            )
        return self


class Config(Section):
    method: str = "random"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    experts: ExpertsConfig = Field(default_factory=ExpertsConfig)
    scores: ScoresConfig = Field(default_factory=ScoresConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    d3: D3Config = Field(default_factory=D3Config)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------- presets

PRESET_DIR = "presets"


def _preset_files() -> dict[str, Any]:
    root = resources.files("distillset").joinpath(PRESET_DIR)
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name[: -len(".yaml")]] = entry
    for entry in root.joinpath("base").iterdir():
        if entry.name.endswith(".yaml"):
            out["base/" + entry.name[: -len(".yaml")]] = entry
    return out


def list_presets() -> dict[str, str]:
    """Public preset names and their one-line descriptions (the YAML's first comment line)."""
    out = {}
    for name, entry in sorted(_preset_files().items()):
        if name.startswith("base/"):
            continue
        lines = entry.read_text().splitlines()
        out[name] = lines[0].lstrip("# ").strip() if lines else ""
    return out


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {str(e).splitlines()[0]}.") from e
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{where} nests its collections too deeply to be a config.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of config sections, not a {type(data).__name__}.")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}); save it "
            "as UTF-8 YAML."
        ) from None
    except OSError as e:
        raise ConfigError(
            f"config file {path} cannot be read ({e.strerror}); check its permissions."
        ) from None


def _printable(text: object) -> str:
    """`text` as it can be shown on one line: control characters escaped."""
    text = str(text)
    return text if text.isprintable() else repr(text)[1:-1]


# a bad value is shown in the message, but never more than a line of it (YAML aliases can make a small
# file expand to a huge structure)
_SHOW = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHOW.maxlevel = 2
_SHOW.maxlist = _SHOW.maxdict = 4
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlong = 40


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_layers(source: str, seen: tuple[str, ...] = ()) -> dict:
    """Read a preset name or YAML path, following `base:` links (a preset name or `base/<dataset>`)."""
    if source in seen:
        raise ConfigError(f"presets form a cycle through {source!r}.")
    files = _preset_files()
    path = Path(source)
    if source in files:
        data = _read_yaml(files[source].read_text(), f"preset {source!r}")
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {source} does not exist; give a YAML path or a preset name.")
        data = _read_yaml(_read_text(path), str(path))
    else:
        close = difflib.get_close_matches(source, list(list_presets()), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " Run `distillset presets` to list them."
        raise ConfigError(f"{source!r} is neither a preset nor a YAML file.{hint}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"`base` in {source!r} must name one preset.")
    key = base if base in files else f"base/{base}"
    return _merge(_load_layers(key if key in files else base, (*seen, source)), data)


# ---------------------------------------------------------------- overrides and validation


def _check_keys(data: dict, model: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys with the nearest valid one, before pydantic's longer message."""
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(fields)}."
            raise ConfigError(f"unknown config key {_printable(f'{prefix}{key}')}{hint}")
        sub = fields[key].annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} is a section; set its keys, e.g. {prefix}{key}.name=...")
            _check_keys(value, sub, f"{prefix}{key}.")


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must have the form section.key=value, e.g. data.ipc=10.")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:  # PyYAML composes nested collections recursively
        shown = _printable(key.strip())
        raise ConfigError(
            f"the value of {shown} nests its collections too deeply; give a flat value."
        ) from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _merge({}, data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                shown = _printable(".".join(path))
                raise ConfigError(f"{shown}: {_printable(part)} is a value, not a section.")
        node[path[-1]] = value
    return data


def validate(data: dict) -> Config:
    _check_keys(data, Config)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        # a whole section says nothing useful
        shown = "" if isinstance(got, dict) else f" (got {_SHOW.repr(got)})"
        raise ConfigError(f"{where}: {msg}{shown}.") from e


def load_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve a preset name or YAML path (None = the defaults) with `key=value` overrides."""
    data = _load_layers(source) if source else {}
    return validate(apply_overrides(data, list(overrides)))
