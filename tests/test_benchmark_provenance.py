"""What the benchmarks record about the code that made a result, and how they refuse stale work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from distillset.provenance import code_hash, describe, made_by_other_code, provenance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ablation  # noqa: E402


def test_provenance_names_the_command_commit_and_code():
    made = provenance(["benchmarks/x.py", "--root", "runs/a b"])
    assert made["command"] == "python benchmarks/x.py --root 'runs/a b'"
    assert made["code"] == code_hash() and len(made["code"]) == 16
    assert made["date"].startswith("20") and "T" in made["date"]
    assert not made_by_other_code(made, provenance([]))
    assert made_by_other_code({**made, "code": "0" * 16}, made) and made_by_other_code(None, made)
    assert "before provenance" in describe(None)


def test_the_code_hash_follows_the_source_files(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("not code\n")
    before = code_hash(tmp_path)
    (tmp_path / "notes.md").write_text("still not code\n")
    assert code_hash(tmp_path) == before
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_hash(tmp_path) != before


def test_the_code_hash_ignores_docstrings_comments_and_layout_but_not_code_or_strings(tmp_path):
    def hashed(py: str, yml: str = "a: 1\nb: [2, 3]\n") -> str:
        (tmp_path / "m.py").write_text(py)
        (tmp_path / "p.yaml").write_text(yml)
        return code_hash(tmp_path)

    base = hashed(
        '"""Module doc."""\n\nX = 1  # one\n\n\ndef f(a):\n    """Doc\n    on two lines, ± 1."""\n'
        '    s = """a\n\n  b  \n"""\n    return a + X  # plus\n'
    )
    same = [
        hashed(
            '"""Another module doc,\nlonger."""\nX = 1\n# a comment line\ndef f(a):   \n'
            '    """Other doc."""\n    s = """a\n\n  b  \n"""\n    return a + X\n'
        ),
        hashed(
            '"""Module doc."""\n\nX = 1  # one\n\n\ndef f(a):\n    """Doc\n    on two lines, ± 1."""\n'
            '    s = """a\n\n  b  \n"""\n    return a + X  # plus\n',
            "# a comment\nb: [2, 3]\na: 1\n",
        ),
    ]
    assert same == [base, base]
    different = [
        hashed('X = 1\ndef f(a):\n    s = """a\n\n  b  \n"""\n    return a - X\n'),  # the code
        hashed('X = 1\ndef f(a):\n    s = """a\n  b  \n"""\n    return a + X\n'),  # a string's lines
        hashed('X = 1\ndef f(a):\n    s = """a\n\n  b\n"""\n    return a + X\n'),  # its spaces
        hashed('X = 1\ndef f(a):\n    s = """a\n\n  b  \n"""\n    return a + X\n', "a: 1\nb: [3, 2]\n"),
        hashed('X = 1\ndef f(a):\n    s = "#"\n    return a + X\n'),  # a hash sign in a string is code
        hashed('X = 1\ndef f(a):\n    s = "# other"\n    return a + X\n'),
    ]
    assert base not in different and len(set(different)) == len(different)
    assert hashed("def broken(:\n") != hashed("def broken( :\n")  # unparsable: its bytes


def test_a_benchmark_root_made_by_other_code_is_refused_or_shown_stale(tmp_path):
    root = tmp_path / "digits"
    assert ablation.claim_root(root, cached=False) == ablation.current()  # new: claimed for this code
    assert json.loads((root / "provenance.json").read_text())["code"] == code_hash()
    assert ablation.claim_root(root, cached=False)["code"] == code_hash()  # same code: reused

    older = {**ablation.current(), "code": "0" * 16, "commit": "abcdef0" + "0" * 33}
    (root / "provenance.json").write_text(json.dumps(older))
    with pytest.raises(SystemExit, match="--fresh"):
        ablation.claim_root(root, cached=False)
    assert ablation.claim_root(root, cached=True) == older  # tabulated, and marked stale below
    rows = [{"stale": True, "made_by": older}, {"stale": False, "made_by": ablation.current()}]
    lines = ablation.made_by_lines(rows)
    assert "Produced by" in lines[0] and "Stale" in lines[1] and "abcdef0" in lines[1]
    assert ablation.stale_mark(rows[0]) == " (stale)" and ablation.stale_mark(rows[1]) == ""

    (root / "provenance.json").unlink()  # work from before provenance was recorded
    (root / "experts").mkdir()
    with pytest.raises(SystemExit, match="before provenance was recorded"):
        ablation.claim_root(root, cached=False)


def test_rows_of_an_earlier_results_file_are_carried_marked_stale(tmp_path):
    """Rows of an older results file that a run does not recompute are kept, marked stale, with the commit
    that wrote the file when the rows themselves record no provenance; recomputed rows replace them."""
    row = {"dataset": "fashion-mnist", "variant": "tm", "ipc": 1, "distilled": [0.7, 0.01]}
    old = [row, {**row, "dataset": "digits"}, {**row, "variant": "pad"}]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    computed = [{**row, "dataset": "digits", "made_by": ablation.current(), "stale": False}]
    carried = ablation.carried_rows(path, computed, old)
    assert [(r["dataset"], r["variant"]) for r in carried] == [
        ("fashion-mnist", "tm"),
        ("fashion-mnist", "pad"),
    ]
    assert all(r["stale"] and r["made_by"]["carried_from"] == path.as_posix() for r in carried)
    fresh = {**row, "variant": "pad", "made_by": ablation.current()}  # a row that recorded its maker
    assert not ablation.carried_rows(path, [], [fresh])[0]["stale"]
    ordered = ablation.table_order([*carried, *computed], ["tm", "pad"])
    assert [(r["dataset"], r["variant"]) for r in ordered] == [
        ("digits", "tm"),
        ("fashion-mnist", "tm"),
        ("fashion-mnist", "pad"),
    ]
    assert "carried from" in ablation.made_by_lines(ordered)[-1]


def test_a_stale_row_is_not_differenced_against_a_recomputed_reference():
    def row(variant, mean, stale=False):
        return {"dataset": "d", "ipc": 10, "variant": variant, "distilled": [mean, 0.01], "stale": stale}

    rows = [row("mtt", 0.90), row("init", 0.92), row("smooth", 0.95, stale=True)]
    assert ablation.deltas(rows, "mtt") == ["", "+2.00", ""]
    rows.append(row("mtt", 0.80, stale=True))
    assert ablation.deltas(rows, "mtt") == ["", "+2.00", "+15.00", ""]
