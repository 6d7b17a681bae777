"""Every accuracy and ratio the README and the docs quote comes, verbatim, from a committed results file
that the same section names (`benchmarks/results/<name>.md`); a figure found only on rows marked stale is
quoted in a section that says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
RESULTS = TOP / "benchmarks" / "results"
DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]
FIGURE = re.compile(r"(?<![\w.])\d+\.\d+ \+- \d+\.\d+|(?<![\w.])\d+\.\d+x\b")
CITED = re.compile(r"benchmarks/results/(\w+)\.(?:md|json)")


def _flat(text: str) -> str:
    """Line breaks and runs of spaces as one space, and ± as +-: figures compare as they read."""
    return re.sub(r"\s+", " ", text.replace("±", "+-"))


def _sections(text: str) -> list[str]:
    return re.split(r"^#+ ", text, flags=re.M)


def _problems(doc: Path) -> list[str]:
    problems = []
    for section in _sections(doc.read_text()):
        flat = _flat(section)
        figures = FIGURE.findall(flat)
        if not figures:
            continue
        title = section.splitlines()[0]
        names = sorted(set(CITED.findall(flat)))
        if not names:
            problems.append(f"section '{title}' quotes {figures[:3]} but names no results file")
            continue
        lines = [
            _flat(line) for n in names if (RESULTS / f"{n}.md").exists()
            for line in (RESULTS / f"{n}.md").read_text().splitlines()
        ]  # fmt: skip
        fresh = " ".join(line for line in lines if "(stale)" not in line)
        stale = " ".join(line for line in lines if "(stale)" in line)
        for f in figures:
            if f in fresh:
                continue
            if f not in stale:
                problems.append(f"'{title}': {f} is in none of {names}")
            elif "stale" not in flat:
                problems.append(f"'{title}': {f} comes from a stale row, and the section does not say so")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_figures_are_in_the_results_files_the_section_names(doc):
    problems = _problems(doc)
    assert not problems, f"{doc.name}:\n" + "\n".join(problems)


def test_the_check_finds_an_unbacked_figure_and_an_unmarked_stale_one(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "t.md").write_text("| a | 90.00 +- 1.00 |\n| b (stale) | 80.00 +- 2.00 |\n")
    monkeypatch.setitem(globals(), "RESULTS", results)
    doc = tmp_path / "d.md"
    doc.write_text("# A\nIn `benchmarks/results/t.md`: 90.00 +- 1.00 and 80.00 +- 2.00.\n")
    assert _problems(doc) == ["'A': 80.00 +- 2.00 comes from a stale row, and the section does not say so"]
    doc.write_text("# A\nIn `benchmarks/results/t.md`: 90.00 +- 1.00 and 80.00 +- 2.00 (stale).\n")
    assert _problems(doc) == []
    doc.write_text("# A\nIn `benchmarks/results/t.md`: 91.00 +- 1.00.\n# B\nIt is 2.50x as long.\n")
    assert _problems(doc) == [
        "'A': 91.00 +- 1.00 is in none of ['t']",
        "section 'B' quotes ['2.50x'] but names no results file",
    ]
