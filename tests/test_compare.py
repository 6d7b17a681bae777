"""Comparing evaluated runs: one row per run with the numbers of its evaluation.json, the files written,
and entries that were never evaluated refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from distillset.cli import main
from distillset.compare import compare, unique_names
from distillset.errors import DistillsetError


def _pm(s: dict, plus: str = "±") -> str:
    return f"{100 * s['mean']:.2f} {plus} {100 * s['std']:.2f}"


def test_two_runs_give_their_evaluations_numbers(demo_runs, tmp_path):
    runs = [demo_runs / "datm-ipc1", demo_runs / "datm-ipc10"]
    c = compare(runs)
    cols, rows = c.columns(), c.rows()
    assert cols[:5] == ["name", "method", "dataset", "IPC", "labels"]
    assert "convnet (%)" in cols and "random real convnet (%)" in cols
    assert [r[0] for r in rows] == ["datm-ipc1", "datm-ipc10"]
    assert [r[1] for r in rows] == ["datm", "datm"] and [r[2] for r in rows] == ["digits", "digits"]
    assert [r[3] for r in rows] == ["1", "10"] and [r[4] for r in rows] == ["soft", "soft"]
    for run, row in zip(runs, rows, strict=True):
        ev = json.loads((run / "evaluation.json").read_text())
        assert row[cols.index("convnet (%)")] == _pm(ev["results"]["convnet"])
        for key, words in (
            ("random_baseline", "random real"),
            ("soft_random_baseline", "random real, soft labels"),
        ):
            if key in ev:
                assert row[cols.index(f"{words} convnet (%)")] == _pm(ev[key]["convnet"])
        assert row[cols.index("IPC-equivalents")] == f"{ev['storage']['ipc_equivalent']:.2f}"
        assert row[cols.index("distill (s)")] == f"{ev['compute']['distill_seconds']:.2f}"
        assert _pm(ev["results"]["convnet"], "+-") in c.to_text()
        assert _pm(ev["results"]["convnet"]) in c.to_markdown()

    paths = c.write(tmp_path / "out")
    assert {p.name for p in paths.values()} == {"compare.md", "compare.html", "compare.png", "compare.json"}
    assert all(p.exists() for p in paths.values())
    with Image.open(paths["png"]) as im:
        im.load()
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)  # nothing remote
    saved = json.loads(paths["json"].read_text())
    assert [r["name"] for r in saved["rows"]] == ["datm-ipc1", "datm-ipc10"]
    ev1 = json.loads((runs[0] / "evaluation.json").read_text())
    assert saved["rows"][0]["results"]["convnet"]["mean"] == ev1["results"]["convnet"]["mean"]


def test_coreset_baselines_get_columns_and_a_missing_one_stays_blank(demo_runs, tmp_path):
    run = tmp_path / "herded"
    shutil.copytree(demo_runs / "datm-ipc1", run)
    ev = json.loads((run / "evaluation.json").read_text())
    ev["baselines"] = {"herding": {"convnet": {"mean": 0.4321, "std": 0.0123, "runs": [0.4321]}}}
    (run / "evaluation.json").write_text(json.dumps(ev))
    c = compare([run, demo_runs / "datm-ipc10"])
    col = c.columns().index("herding convnet (%)")
    assert [r[col] for r in c.rows()] == ["43.21 ± 1.23", ""]


def test_artifact_directory_uses_its_runs_evaluation_and_the_names_stay_unique(demo_runs):
    c = compare([demo_runs / "datm-ipc1" / "distilled", demo_runs / "datm-ipc10" / "distilled"])
    assert [e.name for e in c.entries] == ["datm-ipc1/distilled", "datm-ipc10/distilled"]
    ev = json.loads((demo_runs / "datm-ipc10" / "evaluation.json").read_text())
    assert c.rows()[1][c.columns().index("convnet (%)")] == _pm(ev["results"]["convnet"])
    assert unique_names([Path("/a/x"), Path("/b/x"), Path("/a/y"), Path("/a/y")]) == [
        "a/x",
        "b/x",
        "y",
        "y (2)",
    ]


def test_an_entry_without_evaluation_is_refused(demo_runs, tmp_path, capsys):
    run = tmp_path / "datm-ipc1"
    shutil.copytree(demo_runs / "datm-ipc1", run)
    (run / "evaluation.json").unlink()
    with pytest.raises(DistillsetError, match="distillset evaluate"):
        compare([demo_runs / "datm-ipc10", run])
    # the run's evaluation is that of RUN/distilled, not of the last set
    with pytest.raises(DistillsetError, match="no evaluation"):
        compare([demo_runs / "datm-ipc10" / "distilled-final"])
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(run), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(run) in err and err.strip().count("\n") == 0


def test_compare_command_prints_the_table_and_writes_the_files(demo_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", str(demo_runs / "datm-ipc1"), str(demo_runs / "datm-ipc10"), "--out", str(out)])
    text = capsys.readouterr().out
    assert text.startswith("name | method | dataset | IPC") and "datm-ipc10 | datm | digits | 10" in text
    assert "comparison written to" in text
    assert all((out / f"compare.{ext}").exists() for ext in ("md", "html", "png", "json"))
