"""Mutation check of the promises that make our results honest: each mutant breaks one promise in a copy of
the source, and the test suite must fail on it.

A mutant is one or more exact replacements in one file of `src/distillset` (each must match exactly once,
so a mutant that no longer applies after a refactor stops the script instead of passing silently). For
each mutant the script copies the checkout (tracked and untracked, not ignored files) once, applies the
mutant, and runs pytest there with `PYTHONPATH` pointing at the copy's `src` (child processes, such as
the tests' SIGKILLed runs, inherit it): first the tests named as the mutant's catchers, then, if they
pass, the whole suite with `-x`. It reports the first failing test of each mutant, or that the mutant
survived. The unmutated copy is checked first: the whole suite must pass there, and every named catcher
must exist, so that a failure under a mutant means the mutant was caught.

Writes `benchmarks/results/mutants.{json,md}`; exits 1 if a mutant survived.

    python benchmarks/mutants.py                    # every mutant
    python benchmarks/mutants.py --only eval-selects-on-test,distill-restarts
    python benchmarks/mutants.py --full             # the whole suite per mutant: every test that fails
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from distillset.provenance import describe, provenance
from distillset.utils import write_json, write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
TIMEOUT = 1800


@dataclass(frozen=True)
class Mutant:
    name: str
    promise: str
    file: str  # under src/distillset
    edits: tuple[tuple[str, str], ...]  # (old, new), each old matching exactly once
    catchers: tuple[str, ...]  # the tests meant to catch it (node ids)


I8, I12, I16 = " " * 8, " " * 12, " " * 16  # indentation inside the mutated functions
EVAL = "tests/test_evaluate.py::"
DIST = "tests/test_distill.py::"
STORE = "tests/experts/test_store_and_train.py::"
MATCH = "tests/objectives/test_gradient_distribution.py::"

MUTANTS = [
    Mutant(
        "eval-selects-on-test",
        "the evaluation's checkpoint is chosen on the validation split, never the test split",
        "evaluate.py",
        (
            (
                f"{I16}val = accuracy(model, data.val_x, data.val_y)\n{I16}if val > best_val:",
                f"{I16}val = accuracy(model, data.test_x, data.test_y)\n{I16}if val > best_val:",
            ),
        ),
        (
            f"{EVAL}test_checkpoint_is_chosen_on_validation_and_the_test_split_is_read_last",
            f"{EVAL}test_checkpoint_choice_ignores_the_test_images",
        ),
    ),
    Mutant(
        "eval-reports-last-epoch",
        "the reported accuracy is the chosen checkpoint's, not the last epoch's",
        "evaluate.py",
        (
            (
                '"test": accuracy(model, data.test_x, data.test_y) if best_state is not None else final_test',
                '"test": final_test',
            ),
        ),
        (f"{EVAL}test_checkpoint_is_chosen_on_validation_and_the_test_split_is_read_last",),
    ),
    Mutant(
        "distill-validates-on-test",
        "distillation chooses its best set on the validation split, never the test split",
        "distill.py",
        (
            (
                "        args = (data, cfg.eval, view.lr,",
                "        args = (dataclasses.replace(data, val_x=data.test_x, val_y=data.test_y), "
                "cfg.eval, view.lr,",
            ),
            ("import json\n", "import dataclasses\nimport json\n"),
        ),
        (f"{DIST}test_best_set_is_chosen_without_reading_the_test_split",),
    ),
    Mutant(
        "distill-keeps-latest-set",
        "the artifact is the set with the best validation accuracy, not the latest",
        "distill.py",
        (("            if val is None or best_val is None or val > best_val:", "            if True:"),),
        (f"{DIST}test_the_set_with_the_best_validation_accuracy_is_kept",),
    ),
    Mutant(
        "eval-no-lr-decay",
        "evaluation multiplies the lr by 0.1 at decay_at",
        "evaluate.py",
        (('            group["lr"] *= 0.1', '            group["lr"] *= 1.0'),),
        (f"{EVAL}test_evaluation_recipe_sgd_momentum_decay_schedule_and_dsa",),
    ),
    Mutant(
        "eval-no-momentum",
        "evaluation uses SGD momentum 0.9",
        "evaluate.py",
        (("lr=lr, momentum=ecfg.momentum, weight_decay", "lr=lr, momentum=0.0, weight_decay"),),
        (f"{EVAL}test_evaluation_recipe_sgd_momentum_decay_schedule_and_dsa",),
    ),
    Mutant(
        "eval-no-weight-decay",
        "evaluation uses weight decay 5e-4",
        "evaluate.py",
        (("weight_decay=ecfg.weight_decay)", "weight_decay=0.0)"),),
        (f"{EVAL}test_evaluation_recipe_sgd_momentum_decay_schedule_and_dsa",),
    ),
    Mutant(
        "eval-dsa-first-epoch-only",
        "evaluation applies DSA on every batch",
        "evaluate.py",
        (
            (
                "loss, _ = train_epoch(model, x, y, opt, ecfg.batch, order_gen, aug, aug_gen)",
                "loss, _ = train_epoch(model, x, y, opt, ecfg.batch, order_gen, aug if epoch == 0 else None, "
                "aug_gen)",
            ),
        ),
        (f"{EVAL}test_evaluation_recipe_sgd_momentum_decay_schedule_and_dsa",),
    ),
    Mutant(
        "baseline-fewer-epochs",
        "the baselines (random, herding, k-center) train as many epochs as the distilled set",
        "evaluate.py",
        (
            (
                'base_lr, ecfg.epochs, ("eval", name, r), (tag, name, r), aug)',
                'base_lr, ecfg.epochs // 2, ("eval", name, r), (tag, name, r), aug)',
            ),
        ),
        (f"{EVAL}test_random_baseline_gets_the_same_recipe_and_initialisation",),
    ),
    Mutant(
        "baseline-no-decay",
        "the baselines have the distilled set's lr schedule",
        "evaluate.py",
        (
            (
                f"{I8}source = FixedData(data.train_x[idx], labels)\n",
                f"{I8}source = FixedData(data.train_x[idx], labels)\n"
                f'{I8}ecfg = ecfg.model_copy(update={{"decay_at": 1.0}})\n',
            ),
        ),
        (f"{EVAL}test_random_baseline_gets_the_same_recipe_and_initialisation",),
    ),
    Mutant(
        "baseline-no-dsa",
        "the baselines are trained with DSA too",
        "evaluate.py",
        (
            (
                f"{I8}source = FixedData(data.train_x[idx], labels)\n",
                f"{I8}source = FixedData(data.train_x[idx], labels)\n"
                f'{I8}ecfg = ecfg.model_copy(update={{"dsa": False}})\n',
            ),
        ),
        (f"{EVAL}test_random_baseline_gets_the_same_recipe_and_initialisation",),
    ),
    Mutant(
        "baseline-other-init",
        "a baseline's network r starts from the distilled set's network r's weights",
        "evaluate.py",
        (
            (
                'base_lr, ecfg.epochs, ("eval", name, r), (tag, name, r), aug)',
                'base_lr, ecfg.epochs, ("baseline", name, r), (tag, name, r), aug)',
            ),
        ),
        (f"{EVAL}test_random_baseline_gets_the_same_recipe_and_initialisation",),
    ),
    Mutant(
        "distill-restarts",
        "an interrupted distillation resumes from its checkpoint instead of starting over",
        "distill.py",
        (("    resumed = read_checkpoint(ckpt_path)", "    resumed = None"),),
        (
            f"{DIST}test_interrupted_run_resumes_to_the_same_artifact",
            f"{DIST}test_resuming_continues_from_the_checkpoint_on_disk",
        ),
    ),
    Mutant(
        "distill-checkpoints-only-on-interrupt",
        "distillation checkpoints as it goes, not in clean-up code a real kill never runs",
        "distill.py",
        (
            (
                "            if done % dcfg.checkpoint_every == 0 or done == dcfg.iterations:\n"
                "                checkpoint(done)",
                "            if done == dcfg.iterations:\n                checkpoint(done)",
            ),
            (
                "                step(synthetic, term, objective, it)",
                "                try:\n"
                "                    step(synthetic, term, objective, it)\n"
                "                except KeyboardInterrupt:\n"
                "                    checkpoint(it)\n"
                "                    raise",
            ),
        ),
        (f"{DIST}test_a_run_killed_by_sigkill_resumes_to_the_same_artifact",),
    ),
    Mutant(
        "metrics-keeps-cut-line",
        "a metrics line cut short by a kill is dropped on resume",
        "rundir.py",
        (
            (
                "            continue  # a line cut short by the interruption",
                "            keep.append(line)\n            continue",
            ),
        ),
        (f"{DIST}test_a_run_killed_by_sigkill_resumes_to_the_same_artifact",),
    ),
    Mutant(
        "threshold-still-steps",
        "an update skipped by DATM's threshold moves nothing",
        "distill.py",
        (("    if not term.skip:\n", "    if True:\n"),),
        (f"{DIST}test_threshold_skips_updates",),
    ),
    Mutant(
        "experts-restart",
        "an interrupted expert resumes from its partial checkpoint instead of starting over",
        "experts/train.py",
        (("    resumed = store.read_partial(i) if store is not None else None", "    resumed = None"),),
        (
            f"{STORE}test_interrupted_expert_resumes_to_the_same_trajectory",
            f"{STORE}test_resuming_an_expert_continues_from_its_checkpoint_on_disk",
        ),
    ),
    Mutant(
        "scores-restart",
        "interrupted or finished difficulty scores are resumed or reused, not recomputed",
        "experts/scores.py",
        (("    stored = _read(path, identity, labels)", "    stored = None"),),
        ("tests/experts/test_scores.py::test_interrupted_computation_resumes_at_the_next_model",),
    ),
    Mutant(
        "store-ignores-preprocessing",
        "an expert store made with other preprocessing (ZCA) is refused",
        "data/prepared.py",
        (('            "preprocessing": self.prep.to_manifest(),\n', ""),),
        (f"{STORE}test_store_made_for_other_data_is_refused_by_training_and_by_distillation",),
    ),
    Mutant(
        "store-ignores-data",
        "an expert store made for another dataset or split is refused",
        "experts/train.py",
        (('        "data": data.fingerprint(),\n', ""),),
        (f"{STORE}test_store_made_for_other_data_is_refused_by_training_and_by_distillation",),
    ),
    Mutant(
        "soft-ce-summed",
        "soft cross-entropy is averaged over the batch",
        "training.py",
        ((".sum(dim=1).mean()", ".sum(dim=1).sum()"),),
        ("tests/test_training.py::test_soft_cross_entropy_by_hand",),
    ),
    Mutant(
        "soft-ce-swapped",
        "soft cross-entropy takes the softmax of the label logits as its target",
        "training.py",
        (
            (
                "-(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1))",
                "-(F.softmax(logits, dim=1) * F.log_softmax(target_logits, dim=1))",
            ),
        ),
        ("tests/test_training.py::test_soft_cross_entropy_by_hand",),
    ),
    Mutant(
        "soft-labels-as-hard",
        "label logits train with soft cross-entropy, not the cross-entropy of their argmax",
        "training.py",
        (
            (
                "return soft_cross_entropy(logits, y) if y.is_floating_point() else",
                "return F.cross_entropy(logits, y.argmax(1)) if y.is_floating_point() else",
            ),
        ),
        ("tests/test_training.py::test_classification_loss_picks_the_loss_by_the_targets",),
    ),
    Mutant(
        "adjoint-hvp-single-precision",
        "the adjoint equals the unroll to 1e-12 in float64 (an HVP rounded to float32 is off by ~1e-9)",
        "inner/engines.py",
        (
            (
                "                        lam = lam + hvp\n",
                "                        lam = lam + hvp.float().to(hvp.dtype)\n",
            ),
        ),
        ("tests/inner/test_engines.py::test_adjoint_equals_unroll_in_float64",),
    ),
    Mutant(
        "penalty-flows-into-data",
        "AST's input-gradient penalty sends no gradient into the data",
        "experts/smooth.py",
        (("    x = x.detach().requires_grad_(True)", "    x = x.requires_grad_(True)"),),
        ("tests/experts/test_smooth.py::test_penalty_parameter_gradient_matches_finite_differences",),
    ),
    Mutant(
        "representative-nearest-mean",
        "AST's representative initialisation takes the image nearest each k-means centre",
        "synthetic/init.py",
        (
            (
                "dist = torch.cdist(torch.from_numpy(km.cluster_centers_), feats)",
                "dist = torch.cdist(feats.mean(0, keepdim=True).expand(ipc, -1), feats)",
            ),
        ),
        (
            "tests/inner/test_alignment.py::test_representative_init_takes_the_image_nearest_each_k_means_centre",
        ),
    ),
    Mutant(
        "siamese-two-draws",
        "DSA and DM augment a class's real and synthetic batches with one shared draw",
        "objectives/real.py",
        (
            (
                "    return apply_dsa(real, params), apply_dsa(syn, params)",
                "    other = sample_dsa(\n"
                "        syn.shape[0], tuple(syn.shape[2:]), strategy, gen, syn.device, batchwise=True\n"
                "    )\n"
                "    return apply_dsa(real, params), apply_dsa(syn, other)",
            ),
        ),
        (
            "tests/objectives/test_gradient_distribution.py::test_one_shared_draw_replays_identically_on_a_real_and_a_synthetic_batch",
        ),
    ),
    Mutant(
        "dc-distance-keeps-1d",
        "DC's distance skips every 1-D parameter tensor (biases, norm affines)",
        "objectives/gradient.py",
        (
            (
                "    if g.dim() == 1:\n        return None",
                "    if g.dim() == 1:\n        return g.reshape(1, -1)",
            ),
        ),
        (f"{MATCH}test_ours_distance_by_hand",),
    ),
    Mutant(
        "pool-drops-other-end",
        "PAD's data selection drops the easiest drop_easy and the hardest drop_hard of each class",
        "objectives/real.py",
        (("            pools.append(order[lo:hi])", "            pools.append(order[n - hi : n - lo])"),),
        (
            "tests/objectives/test_gradient_distribution.py::test_pad_data_selection_drops_each_class_end_of_the_pool",
        ),
    ),
    Mutant(
        "d3-drops-remainder-classes",
        "D3's sub-tasks cover every class when K does not divide C (the authors drop the remainder)",
        "federated.py",
        (("        hi = lo + base + (1 if i < extra else 0)", "        hi = lo + base"),),
        ("tests/test_d3.py::test_class_blocks_cover_every_class_contiguously",),
    ),
    Mutant(
        "d3-mmd-biased",
        "D3's MMD is the unbiased estimate (the diagonal of K_XX and K_YY left out)",
        "objectives/mmd.py",
        (("    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))", "    xx = kxx.sum() / (m * m)"),),
        ("tests/test_d3.py::test_unbiased_mmd_matches_a_hand_example",),
    ),
    Mutant(
        "d3-one-sample-per-loop",
        "D3's trajectory step decodes a fresh sample at every inner step",
        "synthetic/distributional.py",
        (
            (
                "            images.append(self.decoder(sample_latents(self.latents[idx], gen)))",
                "            images.append(self.decoder(self.latents[idx][..., 0]))",
            ),
        ),
        ("tests/test_d3.py::test_a_fresh_sample_at_every_inner_step",),
    ),
    Mutant(
        "soft-random-hard-labels",
        "the soft-label random baseline trains on the labeller's logits, not on the hard labels",
        "evaluate.py",
        (
            (
                "labels = data.train_y[idx] if targets is None else targets.to(data.train_x.device)",
                "labels = data.train_y[idx]",
            ),
        ),
        (
            "tests/test_label_baselines.py::test_soft_random_baseline_labels_are_the_experts_logits_on_its_images",
        ),
    ),
    Mutant(
        "soft-random-expert-0-only",
        "the soft-label random baseline's logits follow the set's rule (DATM: the mean over correct experts)",
        "soft_labels.py",
        (
            (
                "expert_label_logits(x, y, classifiers, mean_over_correct)",
                "expert_label_logits(x, y, classifiers[:1], False)",
            ),
        ),
        (
            "tests/test_label_baselines.py::test_soft_random_baseline_labels_are_the_experts_logits_on_its_images",
        ),
    ),
    Mutant(
        "ddranking-lrs-weights-swapped",
        "DD-Ranking's LRS weighs IOR by w and HLR by 1 - w",
        "evaluate.py",
        (
            (
                "_normalised_score(w * i - (1 - w) * h)",
                "_normalised_score((1 - w) * i - w * h)",
            ),
        ),
        ("tests/test_label_baselines.py::test_ddranking_scores_by_hand",),
    ),
    Mutant(
        "ensemble-no-momentum",
        "networks trained together keep SGD's momentum, as one by one",
        "ensemble.py",
        (("            if self.momentum:\n", "            if False:\n"),),
        ("tests/test_ensemble.py::test_members_follow_the_trajectories_of_separate_runs",),
    ),
    Mutant(
        "ensemble-one-lr",
        "networks trained together each keep their own lr",
        "ensemble.py",
        (
            (
                "        self.lrs = torch.tensor(list(lrs), dtype=torch.float64)",
                "        self.lrs = torch.tensor([lrs[0]] * len(lrs), dtype=torch.float64)",
            ),
        ),
        ("tests/test_ensemble.py::test_members_follow_the_trajectories_of_separate_runs",),
    ),
]


def checkout_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def copy_checkout(dest: Path) -> None:
    for rel in checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def mutate(text: str, mutant: Mutant) -> str:
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(
                f"mutant {mutant.name}: {old[:60]!r} occurs {count} times in {mutant.file}; update it."
            )
        text = text.replace(old, new)
    return text


def pytest(copy: Path, args: list[str]) -> tuple[int, list[str], float, str]:
    """Run pytest in the copy; its return code, the failing tests, seconds and the output's tail."""
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, ["(timed out)"], time.perf_counter() - t0, ""
    text = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)
    return proc.returncode, failed, time.perf_counter() - t0, text[-3000:]


def check_copy(copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    where = subprocess.run(
        [sys.executable, "-c", "import distillset; print(distillset.__file__)"],
        cwd=copy, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(copy)):
        raise SystemExit(f"the copy's tests would import distillset from {where}, not from {copy}/src")


def run(mutants: list[Mutant], full: bool, clean: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="distillset-mutants-") as tmp:
        copy = Path(tmp) / "checkout"
        copy_checkout(copy)
        check_copy(copy)
        if clean:
            catchers = sorted({c for m in mutants for c in m.catchers})
            rc, failed, sec, tail = pytest(copy, catchers)
            if rc != 0:
                raise SystemExit(f"the unmutated copy fails its catchers (rc {rc}): {failed}\n{tail}")
            rc, failed, sec, tail = pytest(copy, ["-x"])
            if rc != 0:
                raise SystemExit(f"the unmutated copy fails the suite (rc {rc}): {failed}\n{tail}")
            print(f"unmutated copy: the suite passes ({sec:.0f} s)", flush=True)
        for m in mutants:
            path = copy / "src" / "distillset" / m.file
            original = path.read_text()
            path.write_text(mutate(original, m))
            try:
                if full:
                    rc, failed, sec, _ = pytest(copy, [])
                    by = "suite"
                else:
                    rc, failed, sec, _ = pytest(copy, ["-x", *m.catchers])
                    by = "catchers"
                    if rc == 0:
                        rc, failed, sec2, _ = pytest(copy, ["-x"])
                        by, sec = "suite", sec + sec2
            finally:
                path.write_text(original)
            if rc in (2, 3, 4, 5) and not failed:
                raise SystemExit(f"mutant {m.name}: pytest could not run (rc {rc}); see the catchers' names.")
            row = {
                "mutant": m.name,
                "promise": m.promise,
                "file": f"src/distillset/{m.file}",
                "caught": rc != 0,
                "caught_by": failed,
                "expected_catcher": any(f.split("[")[0] in m.catchers for f in failed),
                "found_by": by,
                "seconds": round(sec, 1),
            }
            rows.append(row)
            verdict = f"caught by {', '.join(failed)}" if row["caught"] else "SURVIVED"
            print(f"{m.name:40s} {verdict}", flush=True)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Mutants: does the suite catch a broken promise?",
        "",
        "Each mutant breaks one promise in a copy of the source; the suite must fail on it. `caught by`: the",
        "first failing test (the mutant's named catchers run first, then the whole suite).",
        "",
        "| mutant | promise broken | file | caught by |",
        "|---|---|---|---|",
    ]
    for r in rows:
        by = "<br>".join(f"`{t}`" for t in r["caught_by"]) if r["caught"] else "**survived**"
        lines.append(f"| {r['mutant']} | {r['promise']} | `{r['file']}` | {by} |")
    caught = sum(r["caught"] for r in rows)
    lines += [
        "",
        f"{caught} of {len(rows)} mutants caught.",
        "",
        f"Produced by `{meta['command']}` at {describe(meta)}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    p.add_argument("--full", action="store_true", help="run the whole suite per mutant, without -x")
    p.add_argument("--skip-clean", action="store_true", help="skip the check of the unmutated copy")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--list", action="store_true", help="list the mutants, check that each applies, and exit")
    args = p.parse_args()
    if args.list:
        for m in MUTANTS:
            mutate((ROOT / "src" / "distillset" / m.file).read_text(), m)
            print(f"{m.name:40s} {m.promise}")
        return
    chosen = MUTANTS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {m.name for m in MUTANTS}
        if unknown:
            p.error(f"unknown mutants {sorted(unknown)}; see --list")
        chosen = [m for m in MUTANTS if m.name in names]
    meta = provenance()
    rows = run(chosen, args.full, not args.skip_clean)
    if not args.only:
        write_json(args.out / "mutants.json", {"provenance": meta, "rows": rows})
        write_text(args.out / "mutants.md", markdown(rows, meta))
    survived = [r["mutant"] for r in rows if not r["caught"]]
    print(
        f"{len(rows) - len(survived)} of {len(rows)} caught" + (f"; survived: {survived}" if survived else "")
    )
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
