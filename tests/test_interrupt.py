"""Fixed kill points of the whole pipeline, in the fast suite: `distillset run` killed by a real SIGKILL
in its evaluation and then, resumed, in its report, ends with the uninterrupted run's results bit for
bit. (The distillation's and the experts' own kill points are in test_distill.py and
experts/test_store_and_train.py; benchmarks/interrupt.py draws kill points at random over every stage.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import sigkilled_at

RUN = [
    "datm-digits",
    "model.width=8",
    "experts.num_experts=2",
    "experts.train_epochs=3",
    "distill.iterations=4",
    "distill.syn_steps=3",
    "distill.max_start_epoch=2",
    "distill.current_max_start_epoch=1",
    "distill.expansion_end_epoch=3",
    "distill.eval_every=2",
    "distill.eval_epochs=2",
    "distill.checkpoint_every=2",
    "eval.runs=2",
    "eval.epochs=4",
    "eval.val_every=2",
    "device=cpu",
]


def body(out: Path) -> str:
    return f"from distillset.cli import main\nmain(['run', *{RUN!r}, '--out', {str(out)!r}])\n"


def run_to_end(out: Path) -> None:
    code = "import torch\ntorch.set_num_threads(2)\n" + body(out)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def results(run: Path) -> tuple[dict, dict, set]:
    """Every tensor outside checkpoints/, the evaluation without its timings, and the file names."""
    tensors = {
        str(p.relative_to(run)): load_file(str(p))
        for p in sorted(run.rglob("*.safetensors"))
        if "checkpoints" not in p.relative_to(run).parts
    }

    def untimed(obj):  # noqa: ANN001, ANN202
        if isinstance(obj, dict):
            return {k: untimed(v) for k, v in obj.items() if "seconds" not in k}
        return [untimed(v) for v in obj] if isinstance(obj, list) else obj

    evaluation = untimed(json.loads((run / "evaluation.json").read_text().replace(str(run), "RUN")))
    files = {str(p.relative_to(run)) for p in run.rglob("*") if "checkpoints" not in p.parts}
    return tensors, evaluation, files


def test_a_run_killed_in_its_evaluation_and_then_in_its_report_ends_as_an_uninterrupted_one(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_to_end(whole)
    sigkilled_at("distillset.evaluate:evaluation_task", 2, body(cut), tmp_path)  # its second group
    assert (cut / "distilled").is_dir() and not (cut / "evaluation.json").exists()
    sigkilled_at("distillset.report:_save_plot", 2, body(cut), tmp_path)  # the report's second figure
    assert (cut / "evaluation.json").exists() and not (cut / "report" / "index.html").exists()
    run_to_end(cut)
    (ta, ea, fa), (tb, eb, fb) = results(whole), results(cut)
    assert fa == fb and ea == eb and set(ta) == set(tb)
    assert len(ta) >= 4  # shards, the chosen and the final set
    for name in ta:
        assert ta[name].keys() == tb[name].keys()
        for key in ta[name]:
            assert torch.equal(ta[name][key], tb[name][key]), (name, key)
