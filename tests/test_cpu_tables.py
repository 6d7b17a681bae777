"""benchmarks/cpu_tables.py: every cell's config loads, stores are shared exactly where experts are trained
alike, and a tiny grid runs end to end into rows with their baselines, time and table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_tables  # noqa: E402

from distillset.config import load_config  # noqa: E402
from distillset.demo import DEMO, DEMO_IPC, QUICK  # noqa: E402


@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion-mnist"])
def test_every_cell_has_a_valid_config(dataset):
    for variant in cpu_tables.VARIANTS:
        for ipc in (1, 10):
            cfg = cpu_tables.cell_config(dataset, variant, ipc)
            assert cfg.data.name == dataset and cfg.method == cpu_tables.variant_parts(variant)[0]
            if cfg.method != "d3":
                assert cfg.data.ipc == ipc


def test_cells_share_a_store_exactly_when_their_experts_are_trained_alike():
    name = cpu_tables.experts_name
    cell = cpu_tables.cell_config
    assert name(cell("mnist", "mtt", 1)) == name(cell("mnist", "datm", 10))
    assert name(cell("mnist", "datm", 1)) == name(cell("mnist", "datm+syn-40", 1))  # distillation only
    assert name(cell("mnist", "mtt", 1)) != name(cell("mnist", "mtt+fast-experts", 1))
    assert name(cell("mnist", "mtt", 1)) != name(cell("fashion-mnist", "mtt", 1))
    assert name(cell("mnist", "mtt", 1)) != name(cell("mnist", "ast", 1))  # smooth experts


def test_digits_datm_cells_are_the_demos_and_mnist_trajectory_cells_keep_syn_steps_20():
    for ipc in (1, 10):
        cell = cpu_tables.cell_config("digits", "datm", ipc)
        shown = load_config("datm-digits", [*DEMO, *DEMO_IPC[ipc], f"data.ipc={ipc}"])
        assert cell.distill == shown.distill and cell.experts == shown.experts and cell.eval == shown.eval
    assert cpu_tables.cell_config("digits", "mtt", 1).experts.lr_teacher == 0.01  # the preset's
    assert load_config("mtt-mnist").distill.syn_steps == 40
    assert cpu_tables.cell_config("mnist", "mtt", 1).distill.syn_steps == 20
    assert cpu_tables.cell_config("mnist", "mtt+syn-40", 1).distill.syn_steps == 40


def test_a_tiny_grid_runs_into_rows_with_baselines_time_and_a_table(tmp_path, monkeypatch):
    monkeypatch.setitem(cpu_tables.SETTINGS, "digits", QUICK)
    monkeypatch.setattr(cpu_tables, "CELL_RECIPES", {})  # the demo's iterations, not these
    monkeypatch.setitem(cpu_tables.ITERATIONS, ("datm", 1), 2)
    monkeypatch.setitem(cpu_tables.ITERATIONS, ("dm", 1), 2)
    rows = cpu_tables.run_dataset("digits", tmp_path / "digits", [1], ["datm", "dm", "datm+hard-labels"])
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"datm", "dm", "datm+hard-labels"}
    for r in rows:
        assert r["random"] is not None and r["distilled"] is not None and r["minutes"] >= 0
        assert r["random_ipc"] == 1  # the cell's IPC: only D3's storage buys another
    assert by["datm"]["soft_random"] is not None  # soft labels: the soft-label random baseline too
    assert by["datm+hard-labels"]["soft_random"] is None and by["dm"]["soft_random"] is None
    assert by["datm"]["seconds"]["experts"] > 0 and by["dm"]["seconds"]["experts"] == 0  # DM needs none
    table = cpu_tables.markdown(rows)
    assert "| digits | datm | 1 | 2 |" in table and "## Ablations" in table
    assert "no learned soft labels" in table
    # a second call reuses every finished cell: nothing is trained again
    again = cpu_tables.run_dataset("digits", tmp_path / "digits", [1], ["datm"])
    assert again[0]["distilled"] == by["datm"]["distilled"]


def test_a_d3_cell_is_summarised_from_its_sub_tasks_logs(tmp_path):
    import ablation

    run = tmp_path / "d3-1"
    for i, skipped in enumerate([[False, True], [True]]):
        (run / "subtasks" / str(i)).mkdir(parents=True)
        lines = [json.dumps({"iteration": k, "skipped": s}) for k, s in enumerate(skipped)]
        (run / "subtasks" / str(i) / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "distilled").mkdir()
    subtasks = [{"block": 0, "best_iteration": 200}, {"block": 1, "best_iteration": 150}]
    manifest = {"distill": {"selection": "validation, per sub-task", "subtasks": subtasks}}
    (run / "distilled" / "manifest.json").write_text(json.dumps(manifest))
    report = {"results": {"convnet": {"mean": 0.5, "std": 0.02, "runs": [0.5]}}, "lr": {"distilled": None}}
    row = ablation.cell_summary(run, report)
    assert row["skipped"] == 2 and row["chosen_iteration"] == "200/150" and row["distilled"] == [0.5, 0.02]
    subtasks[1]["best_iteration"] = 200
    (run / "distilled" / "manifest.json").write_text(json.dumps(manifest))
    assert ablation.cell_summary(run, report)["chosen_iteration"] == 200


def _cell_row(dataset: str, method: str, **fields) -> dict:
    """A finished cell's row, as `run_dataset` records it, with `fields` changed."""
    row = {
        "dataset": dataset,
        "variant": method,
        "method": method,
        "ipc": 1,
        "iterations": 300,
        "chosen_iteration": 150,
        "soft_random": None,
        "minutes": 1.0,
        "ablation": None,
        "stale": False,
    }
    return {**row, **fields}


def test_a_baseline_at_another_ipc_is_named_in_the_table():
    row = _cell_row("digits", "d3", distilled=[0.683, 0.008], random=[0.883, 0.018], random_ipc=3)
    assert "| 88.30 +- 1.80 (IPC 3) |" in cpu_tables._row(row)
    for same in ({**row, "random_ipc": 1}, {k: v for k, v in row.items() if k != "random_ipc"}):
        assert "(IPC" not in cpu_tables._row(same)  # the cell's own IPC, or a row made before the field


@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion-mnist"])
def test_d3_cells_at_ipc_10_store_what_10_images_per_class_do(dataset):
    cfg = cpu_tables.cell_config(dataset, "d3", 10)
    ipc_eq = cpu_tables.d3_ipc_equivalent(cfg, cpu_tables.IMAGE_SHAPES[dataset])
    assert round(ipc_eq) == 10  # the random real baseline is at IPC 10
    assert cfg.d3.mmd_samples == 2 * cfg.d3.lpc
    one = cpu_tables.d3_ipc_equivalent(
        cpu_tables.cell_config(dataset, "d3", 1), cpu_tables.IMAGE_SHAPES[dataset]
    )
    assert one < ipc_eq / 2  # the IPC 1 cell stores far less


def test_an_ablation_is_differenced_only_against_a_cell_as_fresh_as_itself():
    cell = _cell_row("mnist", "mtt", distilled=[0.8376, 0.0189], random=[0.5778, 0.0362])
    ablation = {**cell, "variant": "mtt+syn-40", "ablation": "syn-40", "distilled": [0.8797, 0.0134]}
    fresh = cpu_tables.markdown([cell, ablation])
    assert "| 87.97 +- 1.34 | +4.21 |" in fresh
    mixed = cpu_tables.markdown([cell, {**ablation, "stale": True}])
    assert "| 87.97 +- 1.34 | n/a (one of the two is stale) |" in mixed
    both = cpu_tables.markdown([{**cell, "stale": True}, {**ablation, "stale": True}])
    assert "| 87.97 +- 1.34 | +4.21 |" in both


def test_d3_priors_count_those_in_their_own_class_and_how_far_the_latents_moved(tmp_path):
    import torch

    from distillset.synthetic.decoders import Decoder, DecoderSpec
    from distillset.synthetic.latent_artifact import LatentSet

    spec = DecoderSpec("small", 4, 1, 8, 8, 8, (0.0,), (1.0,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        decoder = Decoder(spec).state_dict()
    lpc, classes = 2, 3

    def latent_set(latents, soft):
        block = {"offset": 0, "num_classes": classes, "latents": latents, "decoder": decoder, "alpha": 0.01}
        return LatentSet(spec, [block], lpc, soft, meta={"num_classes": classes})

    start = torch.ones(lpc * classes, 4, 2)  # norm 4 * sqrt(3)
    moved = start.clone()
    moved[0, 0, 0] += 0.6  # one value moved by 0.6 (and another by 0.8: a shift of norm 1)
    moved[1, 2, 1] -= 0.8
    # priors of classes 0, 0, 1, 1, 2, 2; the expert's argmax 0, 1, 1, 0, 2, 2: 4 of 6 in their class
    soft = torch.full((lpc * classes, classes), 0.1)
    for i, top in enumerate([0, 1, 1, 0, 2, 2]):
        soft[i, top] = 0.8
    run = tmp_path / "d3-1"
    latent_set(moved, soft).save(run / "distilled")
    latent_set(start, None).save(run / "subtasks" / "0" / "distilled-initial")
    priors = cpu_tables.d3_priors(run)
    assert priors["agreement"] == pytest.approx(4 / 6)
    assert priors["latent_shift"] == pytest.approx(1 / (4 * 3**0.5))
    assert cpu_tables.d3_priors(tmp_path / "missing") is None
    latent_set(start, None).save(tmp_path / "hard" / "distilled")
    assert cpu_tables.d3_priors(tmp_path / "hard") is None  # no labelling expert: nothing to count
    rows = [_cell_row("mnist", "d3", distilled=[0.65, 0.03], random=[0.93, 0.01], priors=priors)]
    rows.append(_cell_row("digits", "d3", ipc=10, distilled=[0.7, 0.01], random=[0.9, 0.01], stale=True))
    table = cpu_tables.markdown(rows)
    # the stale row, made before the field: not named
    assert "start: mnist d3 IPC 1 66.7% (latents moved 14.4% of their norm). Chance" in table
    assert cpu_tables._percent(0.000268) == "0.027" and cpu_tables._percent(1.104) == "110.4"
