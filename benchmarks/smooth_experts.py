"""The cost of AST's smooth experts: seconds per expert epoch with and without the input-gradient penalty.

For each dataset, the `ast-<dataset>` preset's model and data, one network per recipe, trained in the same
process with the epochs interleaved (recipe A epoch 1, recipe B epoch 1, ..., so that load on the machine
hits every recipe alike):
  mtt            plain SGD (lr 0.01), the baseline
  smooth-no-gp   AST's optimiser and clipping loss without the penalty
  smooth         AST's smooth experts: + the penalty (lambda 2, norm over channels)
  smooth-image   the same with the norm over the whole image
Ratios are against `mtt`, median over the timed epochs (the clipping loss is on in all of them: the first
fifth of training). Peak accelerator memory per recipe on CUDA. Writes
`benchmarks/results/smooth_experts.{json,md}`.

    python benchmarks/smooth_experts.py --datasets digits,fashion-mnist --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from ast_ablation import MTT_PARTS

from distillset.config import load_config
from distillset.data.augment import DSA
from distillset.data.prepared import prepare
from distillset.experts.optim import expert_optimizer
from distillset.experts.smooth import clip_factor, input_gradient_penalty
from distillset.experts.train import build_expert_model
from distillset.provenance import describe, provenance
from distillset.training import accuracy, train_epoch
from distillset.utils import generator, resolve_device, write_json, write_text

RESULTS = Path(__file__).parent / "results"
RECIPES = {
    "mtt": MTT_PARTS["smooth"],  # plain SGD, lr 0.01
    "smooth-no-gp": ["experts.grad_penalty=0"],
    "smooth": [],
    "smooth-image": ["experts.grad_penalty_norm=image"],
}
EXTRA = {"fashion-mnist": ["experts.num_experts=3"]}


def measure(dataset: str, epochs: int) -> list[dict]:
    cfgs = {
        name: load_config(f"ast-{dataset}", [*EXTRA.get(dataset, []), *ov]) for name, ov in RECIPES.items()
    }
    data = prepare(cfgs["mtt"].data, resolve_device(cfgs["mtt"].device))
    device = data.train_x.device
    state = {}
    for name, cfg in cfgs.items():
        model = build_expert_model(cfg, data, ("bench",)).to(device)
        lam, norm = cfg.experts.grad_penalty, cfg.experts.grad_penalty_norm
        penalty = (lambda m, x, lam=lam, norm=norm: lam * input_gradient_penalty(m, x, norm)) if lam else None
        state[name] = {
            "cfg": cfg,
            "model": model,
            "opt": expert_optimizer(model.parameters(), cfg.experts),
            "gens": (generator(0, "o"), generator(0, "a")),
            "penalty": penalty,
            "times": [],
            "peak_bytes": 0,
        }
    aug = DSA(data.dsa_strategy)
    for epoch in range(epochs + 1):  # epoch 0 warms up and is not timed
        for s in state.values():
            ecfg = s["cfg"].experts
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            train_epoch(
                s["model"], data.train_x, data.train_y, s["opt"], ecfg.batch_train, *s["gens"][:1], aug,
                s["gens"][1], loss_scale=clip_factor(epoch, ecfg), penalty=s["penalty"],
            )  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
                s["peak_bytes"] = max(s["peak_bytes"], torch.cuda.max_memory_allocated())
            if epoch:
                s["times"].append(time.perf_counter() - t0)
    base = statistics.median(state["mtt"]["times"])
    rows = []
    for name, s in state.items():
        sec = statistics.median(s["times"])
        rows.append(
            {
                "dataset": dataset,
                "recipe": name,
                "train_images": len(data.train_y),
                "seconds_per_epoch": round(sec, 4),
                "ratio_vs_mtt": round(sec / base, 3),
                "epochs_timed": epochs,
                "val_acc_after": accuracy(s["model"], data.val_x, data.val_y),
                "peak_mib": round(s["peak_bytes"] / 2**20, 1) if device.type == "cuda" else None,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="digits,fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for ds in args.datasets.split(",") for r in measure(ds, args.epochs)]
    meta = {**provenance(), "device": str(resolve_device("auto"))}
    write_json(args.out / "smooth_experts.json", {"provenance": meta, "rows": rows})
    write_text(args.out / "smooth_experts.md", markdown(rows, meta))
    print(markdown(rows, meta))


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# The cost of smooth experts",
        "",
        "Seconds per expert epoch (median of the timed epochs, interleaved in one process), ratio against",
        "plain SGD. Produced by `benchmarks/smooth_experts.py`.",
        "",
        "| dataset | recipe | train images | epochs timed | s / epoch | vs mtt | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['recipe']} | {r['train_images']} | {r['epochs_timed']} | "
        f"{r['seconds_per_epoch']:.3f} | {r['ratio_vs_mtt']:.2f}x | "
        f"{r['peak_mib'] if r['peak_mib'] is not None else 'n/a (CPU)'} |"
        for r in rows
    ]
    made = f"Produced by `{meta['command']}` at {describe(meta)}, {meta['threads']} torch threads."
    return "\n".join([*lines, "", made]) + "\n"


if __name__ == "__main__":
    main()
