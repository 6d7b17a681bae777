"""Every method of the library at IPC 1 and 10 on digits, MNIST and Fashion-MNIST, beside the random real
subset with the same recipe (and, for a soft-label set, random real images with the same soft labels)
and the published tables; and the measured ablations of what moves the numbers at this scale.

Cells: `<method>` (the `<method>-<dataset>` preset with the dataset's SETTINGS) and `<method>+<ablation>`
(the same with the overrides of one ABLATIONS entry on top). Each cell distils into
`ROOT/<dataset>/<variant>-<ipc>/` and is evaluated there with our protocol (5 fresh networks,
checkpoints chosen on validation), with its own random-real baseline: the recipes of the methods differ
(the learned lr, soft labels), so one baseline per cell keeps each comparison honest. Cells whose experts
are trained the same way share one store (`ROOT/<dataset>/experts-<hash>`). The time shown is the cell's
whole cost on this machine: its experts' training (the store's recorded epochs, shared or not), the
difficulty scores, distillation and evaluation.

Every cell resumes and a finished evaluation is reused (work made by other library code is refused: see
`ablation.py`). Writes `benchmarks/results/cpu_tables.{json,md}`.

    python benchmarks/cpu_tables.py --root runs/cpu-tables                       # every cell
    python benchmarks/cpu_tables.py --datasets mnist --ipcs 1 --variants mtt,datm
    python benchmarks/cpu_tables.py --datasets fashion-mnist --ipcs 1 --variants datm,datm+fast-experts
    python benchmarks/cpu_tables.py --cached --stale-rows benchmarks/results/cpu_tables.json   # tabulate
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import matching_tables
import torch
from ablation import CHOSEN_AT, made_by_lines, main, pct, run_grid, stale_mark

from distillset import demo
from distillset.config import Config, load_config
from distillset.federated import class_blocks
from distillset.identity import settings
from distillset.synthetic.artifact import load_artifact
from distillset.synthetic.decoders import DEFAULT_WIDTH, Decoder, DecoderSpec
from distillset.synthetic.latent_artifact import LatentSet

METHODS = ["mtt", "datm", "pad", "ast", "dc", "dsa", "dm", "d3"]
TRAJECTORY = {"mtt", "datm", "pad", "ast"}
# name -> (what it changes, overrides); applied on top of a method's cell (a trajectory-matching one
# unless ABLATION_METHODS names others)
ABLATIONS = {
    "fast-experts": ("experts' lr 0.01 -> 0.03", ["experts.lr_teacher=0.03"]),
    "5-experts": ("3 -> 5 experts", ["experts.num_experts=5"]),
    "full-data": ("experts and real pool on the full training set", ["data.train_limit=null"]),
    "width-64": ("ConvNet-32 -> ConvNet-64", ["model.width=64"]),
    "syn-40": ("syn_steps 20 -> 40", ["distill.syn_steps=40"]),
    "1000-iterations": ("1000 iterations", ["distill.iterations=1000"]),
    "syn-40-1000": ("syn_steps 40 and 1000 iterations", ["distill.syn_steps=40", "distill.iterations=1000"]),
    "syn-40-1000-5": (
        "syn_steps 40, 1000 iterations and 5 experts (the mtt-mnist preset)",
        ["distill.syn_steps=40", "distill.iterations=1000", "experts.num_experts=5"],
    ),
    "syn-80": ("syn_steps 20 -> 80", ["distill.syn_steps=80"]),
    "start-2": ("max_start_epoch 10 -> 2 (the authors' IPC 1 window)", ["distill.max_start_epoch=2"]),
    "lr-img-1000": ("lr_img 100 -> 1000", ["distill.lr_img=1000"]),
    "hard-labels": ("no learned soft labels", ["distill.soft_label=false"]),
    "real-init": ("real (random) init instead of correctly classified", ["distill.init=real"]),
    "representative-init": ("representative init", ["distill.init=representative"]),
    "zca": ("ZCA whitening", ["data.zca=true"]),
    "eval-1000": ("evaluation 300 -> 1000 epochs", ["eval.epochs=1000", "eval.val_every=100"]),
    "4000-iterations": (
        "4000 iterations",
        ["distill.iterations=4000", "distill.eval_every=500", "distill.checkpoint_every=250"],
    ),
    "lr-latent-10": ("D3's latents' lr 0.01 -> 10", ["d3.lr_latent=10"]),
    "lr-latent-100": ("D3's latents' lr 0.01 -> 100", ["d3.lr_latent=100"]),
}
ABLATION_METHODS = {
    "width-64": {*TRAJECTORY, "dc", "dsa", "dm"},
    "eval-1000": {*TRAJECTORY, "dc", "dsa", "dm"},
    "4000-iterations": {"dm"},  # DM's iterations are cheap; its authors run 20,000
    # SGD at the presets' lr 0.01 leaves the latents where they started (0.03% of their norm in 200
    # iterations at 298 priors per class): they carry no class, so the decoder cannot draw one
    "lr-latent-10": {"d3"},
    "lr-latent-100": {"d3"},
}
VARIANTS = [
    *METHODS,
    *(f"{m}+{a}" for m in METHODS for a in ABLATIONS if m in ABLATION_METHODS.get(a, TRAJECTORY)),
]
MATCHING = matching_tables.SETTINGS  # DC, DSA and DM as in benchmarks/matching_tables.py
# dataset -> overrides for every cell of the dataset
SETTINGS = {
    "digits": [],
    "mnist": ["experts.num_experts=3", "eval.epochs=300", "eval.val_every=50"],
    "fashion-mnist": ["experts.num_experts=3", "eval.epochs=300", "eval.val_every=50"],
}
# (dataset, method) -> ipc -> overrides on top of the cell's (its iterations too). MNIST's trajectory
# cells stay at syn_steps 20, the reference of their ablations, where `mtt-mnist` runs 40 (with 1000
# iterations and 5 experts: the `mtt+syn-40-1000-5` cell). DATM on digits is `make demo`'s: datm-digits
# with the demo's experts (lr 0.03), checks and iterations.
CELL_RECIPES = {
    **{("mnist", m): {ipc: ["distill.syn_steps=20"] for ipc in (1, 10)} for m in TRAJECTORY},
    ("digits", "datm"): {ipc: [*demo.DEMO, *demo.DEMO_IPC[ipc]] for ipc in (1, 10)},
}
# (method, ipc) -> iterations (CPU-sized; the authors run thousands); DC, DSA and DM as matching_tables
ITERATIONS = {
    **matching_tables.ITERATIONS,
    **{(m, 1): 300 for m in TRAJECTORY},
    **{(m, 10): 150 for m in TRAJECTORY},
    ("d3", 1): 200,
    ("d3", 10): 200,
}
# dataset -> D3's priors per class at IPC 10: the storage of 10 images per class (`d3_ipc_equivalent`
# rounds to 10: digits' 8 x 8 images buy far fewer priors than 28 x 28 ones); 2 MMD draws per prior
D3_LPC_10 = {"digits": 17, "mnist": 298, "fashion-mnist": 298}
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}
# ANCHORS.md: ConvNet-128 on the full data, IPC 1 / 10; (c) confirmed, (r) as commonly quoted
PUBLISHED = {
    "mnist": {**matching_tables.PUBLISHED["mnist"], "mtt": "91.4 / 97.3 (r)", "idc": "94.2 / 98.4 (c)"},
    "fashion-mnist": {
        **matching_tables.PUBLISHED["fashion-mnist"],
        "mtt": "75.1 / 87.2 (r)",
        "idc": "81.0 / 86.0 (c)",
    },
}
TARGETS = {  # issue 18: (IPC 1, IPC 10); on digits, above random real by more than two std
    "mnist": (94.0, 98.4),
    "fashion-mnist": (78.0, 87.0),
}


def variant_parts(variant: str) -> tuple[str, str | None]:
    method, _, ablation = variant.partition("+")
    return method, ablation or None


def cell_config(dataset: str, variant: str, ipc: int) -> Config:
    method, ablation = variant_parts(variant)
    its = ITERATIONS[method, ipc]
    overrides = [*SETTINGS[dataset]]
    if method not in TRAJECTORY | {"d3"} and dataset != "digits":
        overrides += MATCHING
    overrides += [f"data.ipc={ipc}", f"distill.iterations={its}"]
    overrides += CELL_RECIPES.get((dataset, method), {}).get(ipc, [])
    if method not in TRAJECTORY | {"d3"}:
        overrides += [f"distill.eval_every={max(1, its // 4)}"]
        overrides += [f"distill.checkpoint_every={max(1, its // 8)}"]
    if method == "d3" and ipc == 10:
        lpc = D3_LPC_10[dataset]
        overrides += [f"d3.lpc={lpc}", f"d3.mmd_samples={2 * lpc}"]
    if ablation is not None:
        overrides += ABLATIONS[ablation][1]
    return load_config(f"{method}-{dataset}", overrides)


def d3_ipc_equivalent(cfg: Config, image_shape: tuple[int, int, int], num_classes: int = 10) -> float:
    """The IPC-equivalent storage of the set a D3 config makes, counted by the library's own `LatentSet`
    (its decoders, latents, soft labels and learned lr) on a set of the config's shape."""
    d3, (c, h, w) = cfg.d3, image_shape
    width = d3.kernel_num or DEFAULT_WIDTH.get(d3.decoder, 0)
    spec = DecoderSpec(d3.decoder, d3.z_dim, c, h, w, width, (0.0,) * c, (1.0,) * c)
    decoder = Decoder(spec).state_dict()
    blocks = [
        {
            "offset": lo,
            "num_classes": hi - lo,
            "latents": torch.zeros((hi - lo) * d3.lpc, d3.z_dim, 2),
            "decoder": decoder,
            "alpha": 0.0,
        }
        for lo, hi in class_blocks(num_classes, d3.subtasks)
    ]
    n = num_classes * d3.lpc
    labels = torch.zeros(n, num_classes) if d3.label_epoch is not None else None
    art = LatentSet(spec, blocks, d3.lpc, labels, meta={"num_classes": num_classes})
    return art.storage()["ipc_equivalent"]


def labelled(cfg: Config, root: Path) -> Config:
    """`cfg` whose soft-label random baseline is labelled by the cell's own experts (kept apart from the
    run directory, in the shared store)."""
    if cfg.method not in TRAJECTORY:
        return cfg
    where = str((root / experts_name(cfg)).resolve())
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"label_experts": where})})


def experts_name(cfg: Config) -> str:
    """One store per way of training experts: the cells that train them alike share it."""
    key = {
        "experts": settings(cfg.experts),
        "model": cfg.model.model_dump(mode="json"),
        "data": cfg.data.model_dump(mode="json", exclude={"ipc"}),
        "scores": cfg.scores.model_dump(mode="json") if cfg.experts.curriculum else None,
        "seed": cfg.seed,
    }
    return "experts-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def experts_seconds(store: Path, num_experts: int) -> float:
    """The training time the store recorded for the first `num_experts` experts (0 without a store)."""
    manifest = store / "manifest.json"
    if not manifest.exists():
        return 0.0
    records = json.loads(manifest.read_text())["experts"]
    return sum(sum(records[str(i)].get("seconds", [])) for i in range(num_experts) if str(i) in records)


def d3_priors(run: Path) -> dict | None:
    """What a D3 cell's priors became. `agreement`: the share of priors whose decoded mean the labelling
    expert (the soft labels' argmax) puts in the prior's own class, 1 / classes when the decoder's images
    carry no class. `latent_shift`: how far distillation moved the latents, ||final - initial|| over
    ||initial|| (each block's initial set is its sub-task's `distilled-initial`). None for a run without
    a distributional set with soft labels."""
    if not (run / "distilled" / "manifest.json").exists():
        return None
    art, _ = load_artifact(run / "distilled")
    if not isinstance(art, LatentSet) or art.soft_labels is None:
        return None
    moved = start = 0.0
    for k, block in enumerate(art.blocks):
        initial, _ = load_artifact(run / "subtasks" / str(k) / "distilled-initial")
        before = initial.blocks[0]["latents"]
        moved += float((block["latents"] - before).square().sum())
        start += float(before.square().sum())
    return {
        "agreement": float((art.soft_labels.argmax(1) == art.hard_labels).float().mean()),
        "latent_shift": (moved / start) ** 0.5 if start else None,
    }


def run_dataset(
    name: str, root: Path, ipcs: list[int], variants: list[str], cached: bool = False
) -> list[dict]:
    rows = []
    for variant in variants:  # each cell trains its own baseline: the recipes differ
        rows += run_grid(
            name,
            root,
            ipcs,
            [variant],
            lambda v, ipc: labelled(cell_config(name, v, ipc), root),
            experts_name,
            lambda cfg: {"method": cfg.method},
            baseline_variant=variant,
            cached=cached,
        )
    for r in rows:
        run = root / f"{r['variant']}-{r['ipc']}"
        cfg = cell_config(name, r["variant"], r["ipc"])
        report = json.loads((run / "evaluation.json").read_text())
        soft = report.get("soft_random_baseline", {}).get("convnet")
        r["soft_random"] = [soft["mean"], soft["std"]] if soft else None
        r["random_ipc"] = report.get("random_baseline_ipc", r["ipc"])  # D3's: its storage's IPC
        seconds = dict(r.get("seconds") or {})
        if r["method"] in TRAJECTORY:
            seconds["experts"] = round(experts_seconds(root / experts_name(cfg), cfg.experts.num_experts), 1)
        r["seconds"] = seconds
        r["minutes"] = round(sum(v for v in seconds.values() if isinstance(v, (int, float))) / 60, 1)
        r["ablation"] = variant_parts(r["variant"])[1]
        if r["method"] == "d3":
            r["priors"] = d3_priors(run)
    return rows


def published(dataset: str, method: str, ipc: int) -> str:
    text = PUBLISHED.get(dataset, {}).get(method)
    return "" if text is None else matching_tables.published(text, ipc)


def target_mark(row: dict) -> str:
    target = TARGETS.get(row["dataset"])
    if row["distilled"] is None:
        return ""
    if row["dataset"] == "digits":  # above random real by more than two (of the larger) std
        if row.get("random") is None:
            return ""
        (d, sd), (r, sr) = row["distilled"], row["random"]
        return f"random + 2 std {'met' if d - r > 2 * max(sd, sr) else 'missed'}"
    if target is None:
        return ""
    goal = target[0 if row["ipc"] == 1 else 1]
    return f"{goal} {'met' if 100 * row['distilled'][0] >= goal else 'missed'}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Every method on the CPU datasets, beside random real and the published tables",
        "",
        "Test accuracy (%) of fresh ConvNets trained on the distilled set, mean +- std over 5 networks,",
        "checkpoints chosen on validation; beside it, trained with the same recipe, a random real subset",
        "of the same IPC (a fresh subset per network) and, for a soft-label set, random real images with",
        "the same kind of soft labels. `minutes`: the cell's whole cost on two CPU cores (its experts'",
        "training, scores, distillation, evaluation). Published: ConvNet-128 on the full data with the",
        "authors' iterations; (c) confirmed, (r) as commonly quoted. Produced by `benchmarks/cpu_tables.py`.",
        "Digits' DATM cells are `make demo`'s recipe (experts at lr 0.03); MNIST's trajectory cells run",
        "syn_steps 20, the `mtt-mnist` preset's recipe is the `mtt+syn-40-1000-5` ablation. D3's random",
        "real subset has the IPC its storage buys (decoders, latents, labels and lr counted in floats),",
        "named beside it where it is not the cell's.",
        "",
        "| dataset | cell | IPC | iterations | chosen at | distilled | random real "
        "| random, same soft labels | published | target | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["ablation"] is None):
        lines.append(_row(r))
    ablations = [r for r in rows if r["ablation"] is not None]
    if ablations:
        lines += [
            "",
            "## Ablations",
            "",
            "Each is its method's cell with the changes named; the difference is against that cell, where"
            " both are as fresh (or as stale) as each other.",
            "",
            "| dataset | cell | change | IPC | distilled | vs the method's cell | random real | minutes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        base = {(r["dataset"], r["variant"], r["ipc"]): r for r in rows}
        for r in ablations:
            ref = base.get((r["dataset"], r["method"], r["ipc"]))
            delta = "n/a"
            if ref and bool(ref.get("stale")) != bool(r.get("stale")):
                delta = "n/a (one of the two is stale)"  # would difference two versions of the code
            elif ref and ref["distilled"] and r["distilled"]:
                delta = f"{100 * (r['distilled'][0] - ref['distilled'][0]):+.2f}"
            lines.append(
                f"| {r['dataset']} | {r['variant']}{stale_mark(r)} | {ABLATIONS[r['ablation']][0]} | "
                f"{r['ipc']} | {pct(r['distilled'])} | {delta} | {pct(r['random'])} | {r['minutes']} |"
            )
    lines += ["", CHOSEN_AT, "", *_agreement_lines(rows)]
    return "\n".join([*lines, *made_by_lines(rows)]) + "\n"


def _agreement_lines(rows: list[dict]) -> list[str]:
    """A sentence on D3's priors: how many decoded means the labelling expert puts in their own class,
    and how far distillation moved the latents."""
    shown = [r for r in rows if r.get("priors")]
    if not shown:
        return []
    cells = "; ".join(
        f"{r['dataset']} {r['variant']} IPC {r['ipc']}{stale_mark(r)} {100 * r['priors']['agreement']:.1f}%"
        + (
            f" (latents moved {_percent(r['priors']['latent_shift'])}% of their norm)"
            if r["priors"].get("latent_shift") is not None
            else ""
        )
        for r in shown
    )
    return [
        "D3's priors: the share whose decoded mean the labelling expert (the soft labels' argmax) puts in "
        "the prior's own class, and how far distillation moved the latents from their N(0, 1) start: "
        f"{cells}. Chance is one in the number of classes (10%).",
        "",
    ]


def _percent(share: float) -> str:
    """A share in percent: one decimal from 1% up, two significant digits below (0.027)."""
    v = 100 * share
    return f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def _row(r: dict) -> str:
    return (
        f"| {r['dataset']} | {r['variant']}{stale_mark(r)} | {r['ipc']} | {r['iterations']} | "
        f"{r['chosen_iteration']} | {pct(r['distilled'])} | {pct(r['random'])}{_at_ipc(r)} | "
        f"{pct(r.get('soft_random'), '')} | {published(r['dataset'], r['method'], r['ipc'])} | "
        f"{target_mark(r)} | {r['minutes']} |"
    )


def _at_ipc(r: dict) -> str:
    """' (IPC n)' where the random real subset is not the cell's IPC (D3's equal-storage baseline)."""
    ipc = r.get("random_ipc", r["ipc"])
    return "" if ipc == r["ipc"] else f" (IPC {ipc})"


if __name__ == "__main__":
    main(__doc__, "cpu_tables", VARIANTS, METHODS, run_dataset, markdown, "digits,mnist,fashion-mnist")
