"""The engine benchmark: the measurement child on a tiny model, the skip rule and the markdown report."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from engine_bench import (  # noqa: E402
    AUTHORS,
    ENGINE_NAMES,
    _reusable,
    predict_peak_mb,
    run_benchmark,
    run_measurement,
    write_markdown,
)

TINY = {
    "shape": [1, 8, 8],
    "width": 8,
    "depth": 1,
    "classes": 10,
    "images": 10,
    "strategy": "color_crop_cutout_scale_rotate",
    "syn_steps": 2,
    "warmup_steps": 1,
    "iters": 1,
    "device": "cpu",
    "threads": 1,
}


@pytest.mark.parametrize("labels", ["soft"])
def test_measurement_child_reports_time_and_memory_for_each_engine(labels):
    specs = [{**TINY, "engine": e, "labels": labels} for e in ENGINE_NAMES]
    with ThreadPoolExecutor(len(specs)) as pool:
        results = list(pool.map(lambda s: run_measurement(s, timeout=120), specs))
    for engine, r in zip(ENGINE_NAMES, results, strict=True):
        assert "error" not in r and "timeout" not in r, r
        assert r["gflop_per_iteration"] > 0 and r["matmul_peak_gflop_per_second"] > 0
        assert r["gflop_per_second"] == pytest.approx(r["gflop_per_iteration"] / r["seconds_per_iteration"])
        assert r["engine"] == engine and r["syn_steps"] == 2 and r["iters"] == 1
        assert r["seconds_per_iteration"] > 0 and len(r["seconds"]) == 1
        assert r["forward_seconds"] > 0 and r["backward_seconds"] > 0
        assert r["memory_kind"] == "rss"
        assert r["peak_mb"] > 0 and r["peak_rss_mb"] >= r["rss_before_mb"] > 0
        assert r["peak_increase_mb"] >= 0
        assert r["finite"] and set(r["grad_norms"]) == {"images", "labels", "lr"}
    # Same seed, same plan: every engine computes the same matching loss.
    assert results[0]["loss"] == pytest.approx(results[2]["loss"], rel=1e-5)
    assert results[1]["loss"] == pytest.approx(results[2]["loss"], rel=1e-5)
    # The adjoint rebuilds every step in its reverse sweep: more arithmetic than the unroll, TESLA's sweep
    # (no Hessian-vector products) less than the adjoint's.
    flops = {r["engine"]: r["gflop_per_iteration"] for r in results}
    assert flops["adjoint"] > flops["unroll"] and flops["adjoint"] > flops["tesla"]


def test_measurement_child_runs_the_authors_loop():
    r = run_measurement({**TINY, "engine": AUTHORS, "labels": "soft"}, timeout=120)
    assert "error" not in r and "timeout" not in r, r
    assert r["engine"] == AUTHORS and r["syn_steps"] == 2 and r["iters"] == 1
    assert r["gflop_per_iteration"] > 0
    assert r["seconds_per_iteration"] > 0 and r["forward_seconds"] > 0 and r["backward_seconds"] > 0
    assert r["memory_kind"] == "rss" and r["peak_mb"] > 0
    assert r["finite"] and set(r["grad_norms"]) == {"images", "labels", "lr"}
    assert all(v > 0 for v in r["grad_norms"].values())
    assert r["params"] > 0


def test_predicted_peak():
    assert predict_peak_mb([], 80) is None
    assert predict_peak_mb([(10, 1000.0)], 20) == pytest.approx(2000.0)
    assert predict_peak_mb([(10, 1000.0), (20, 1500.0), (40, 2500.0)], 80) == pytest.approx(4500.0)
    # A flat (or noisy, decreasing) peak is extrapolated flat.
    assert predict_peak_mb([(10, 500.0), (20, 490.0)], 80) == pytest.approx(490.0)


def _cell(model, engine, steps, seconds, peak, inc=100.0):
    return {
        "model": model,
        "engine": engine,
        "syn_steps": steps,
        "iters": 1,
        "seconds_per_iteration": seconds,
        "peak_mb": peak,
        "peak_increase_mb": inc,
    }


def test_markdown_ratios_and_skips():
    results = {
        "machine": {"device": "cpu", "threads": 2, "cpu_model": "Test CPU", "torch": "x"},
        "settings": {
            "models": {"big": {"label": "ConvNet-128-3, 3x32x32", "images": 100}},
            "steps": [10, 80],
            "engines": ["unroll", "adjoint"],
            "labels": "hard",
        },
        "reference": {"big": {"10": {"seconds": 15.4, "peak_gb": 3.9}}},
        "measurements": [
            _cell("big", "unroll", 10, 4.0, 2000.0),
            {
                **_cell("big", "adjoint", 10, 6.0, 500.0, inc=50.0),
                "other_cpu_cores": 0.9,
                "gflop_per_iteration": 300.0,
                "gflop_per_second": 50.0,
                "matmul_peak_gflop_per_second": 125.0,
            },
            {"model": "big", "engine": "unroll", "syn_steps": 80, "skipped": "would need about 25.0 GB"},
            {**_cell("big", "adjoint", 80, 48.0, 600.0, inc=150.0), "other_cpu_cores": 0.0},
        ],
        "wall_seconds": 120.0,
    }
    md = write_markdown(results)
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in md.splitlines()
        if line.startswith("| ")
    }
    adj10 = [c.strip() for c in rows[("10", "adjoint")].strip("|").split("|")]
    # s/it, iters, peak, +MB, time/unroll, peak/unroll, other load, GFLOP/it, GFLOP/s, % of peak
    assert adj10[2:] == ["6.00", "1", "500", "50", "1.50", "0.25", "0.90 (!)", "300", "50.0", "40%"]
    unr10 = [c.strip() for c in rows[("10", "unroll")].strip("|").split("|")]
    # A cell measured without the FLOP count has none.
    assert unr10[-6:] == ["1.00", "1.00", "", "n/a", "n/a", "n/a"]
    assert "(!) other processes took more than" in md
    assert "skipped: would need about 25.0 GB" in rows[("80", "unroll")]
    # No unroll at 80 steps: no ratio for the adjoint there.
    adj80 = [c.strip() for c in rows[("80", "adjoint")].strip("|").split("|")]
    assert adj80[-6:-3] == ["n/a", "n/a", "0.00"]
    assert "adjoint: peak at 80 steps / peak at 10 steps = 1.20" in md
    assert "(increase over the baseline: 3.00)" in md
    # The authors' row: 15.4 s / 4.0 s = 3.85x faster, 3.9 GB / (2000 / 1024) GB = 2.00x less memory.
    ref = next(line for line in md.splitlines() if line.startswith("| big | 10 |"))
    assert "3.85x" in ref and "2.00x" in ref
    assert "Total benchmark wall time: 2.0 min." in md


def test_markdown_ratios_against_the_authors_loop():
    results = {
        "machine": {"device": "cpu", "threads": 2, "cpu_model": "Test CPU", "torch": "x"},
        "settings": {
            "models": {"small": {"label": "ConvNet-64-3, 1x28x28", "images": 100}},
            "steps": [10, 20],
            "engines": ["unroll", "adjoint", AUTHORS],
            "labels": "soft",
        },
        "measurements": [
            _cell("small", "unroll", 10, 3.0, 2000.0),
            _cell("small", "adjoint", 10, 2.0, 500.0),
            _cell("small", AUTHORS, 10, 4.0, 2500.0),
            _cell("small", "unroll", 20, 6.0, 4000.0),
            _cell("small", "adjoint", 20, 4.0, 520.0),
            {"model": "small", "engine": AUTHORS, "syn_steps": 20, "timeout": 60.0},
        ],
    }
    md = write_markdown(results)
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): [
            c.strip() for c in line.strip("|").split("|")
        ]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    header = next(line for line in md.splitlines() if line.startswith("| syn_steps"))
    assert header.endswith(
        "| other load | time / authors | peak / authors | GFLOP / it | GFLOP/s | % of matmul peak |"
    )
    # The existing columns stay; the next two are against the authors' loop of the same run.
    assert rows[("10", "adjoint")][2:-3] == ["2.00", "1", "500", "100", "0.67", "0.25", "", "0.50", "0.20"]
    assert rows[("10", "unroll")][-5:-3] == ["0.75", "0.80"]
    assert rows[("10", AUTHORS)][-5:-3] == ["1.00", "1.00"]
    # No authors' cell at 20 steps: no ratio there.
    assert rows[("20", "adjoint")][-5:-3] == ["n/a", "n/a"]
    assert "timeout after 60 s" in rows[("20", AUTHORS)][2]
    assert len(rows[("20", AUTHORS)]) == len(rows[("20", "adjoint")])
    assert "`benchmarks/authors_loop.py`" in md
    # Without the authors' loop, the table is as before.
    plain = write_markdown({**results, "settings": {**results["settings"], "engines": ["unroll", "adjoint"]}})
    assert "/ authors" not in plain


def test_resume_keeps_clean_cells_and_refuses_other_settings():
    from distillset.provenance import provenance

    previous = {
        "provenance": provenance(),
        "machine": {"device": "cpu", "threads": 2},
        "settings": {
            "models": {"small": {}},
            "steps": [10],
            "engines": ["unroll", "adjoint"],
            "iters": "1",
            "labels": "hard",
            "warmup_steps": 2,
            "seed": 0,
            "allocator": "library",
        },
        "measurements": [
            {**_cell("small", "unroll", 10, 3.0, 2400.0), "threads": 2, "other_cpu_cores": 0.01},
            {**_cell("small", "adjoint", 10, 4.0, 900.0), "threads": 2, "other_cpu_cores": 0.05},
        ],
        "wall_seconds": 100.0,
    }
    # Every cell is clean: nothing is measured again, and the wall time carries over.
    res = run_benchmark(["small"], [10], ["unroll", "adjoint"], "1", "cpu", previous=previous, quiet_wait=0)
    assert [m["seconds_per_iteration"] for m in res["measurements"]] == [3.0, 4.0]
    assert res["wall_seconds"] >= 100.0 and res["resumed"] == 1
    assert not _reusable({**previous["measurements"][1], "other_cpu_cores": 0.9})
    assert _reusable({"skipped": "would need about 30 GB"}) and not _reusable({"timeout": 10})
    with pytest.raises(click.UsageError, match="steps"):
        run_benchmark(["small"], [10, 20], ["unroll", "adjoint"], "1", "cpu", previous=previous)
    # Cells measured by other library code (or before the code was recorded) are not kept as current.
    for made_by in ({**previous["provenance"], "code": "0" * 16}, None):
        older = {**previous, "provenance": made_by}
        with pytest.raises(click.UsageError, match="library code"):
            run_benchmark(["small"], [10], ["unroll", "adjoint"], "1", "cpu", previous=older, quiet_wait=0)
