"""The run report: a page that needs nothing but the files it wrote, grids that are the artifact's images
pixel for pixel, sentences instead of missing pieces, and one-line errors for a bad run directory."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillset.cli import main
from distillset.errors import DistillsetError
from distillset.report import image_grid, write_report
from distillset.synthetic import DistilledSet, LatentSet
from distillset.synthetic.decoders import Decoder, DecoderSpec
from distillset.synthetic.viewing import viewer_for
from distillset.utils import generator


@pytest.fixture(scope="module")
def report10(demo_runs) -> Path:
    return write_report(demo_runs / "datm-ipc10")


def _references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.IGNORECASE)


def _assert_self_contained(index: Path) -> None:
    page = index.read_text()
    for marker in ("http://", "https://", "//"):
        assert marker not in page
    refs = _references(page)
    assert refs, "the page shows no figure"
    for ref in refs:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", ref, flags=re.IGNORECASE) and not ref.startswith("/")
        target = (index.parent / ref).resolve()
        assert target.parent == index.parent.resolve() and target.is_file(), ref
    for png in index.parent.glob("*.png"):
        with Image.open(png) as im:
            im.load()
    assert {p.name for p in index.parent.glob("*.png")} == set(refs)  # no stale figure beside it


def _tiles_equal(png: Path, pixels: np.ndarray, labels: list[int], num_classes: int) -> int:
    """Cut every tile out of a written grid with `image_grid`'s geometry; compare with `pixels`."""
    _, layout = image_grid(pixels, labels, num_classes)
    grid = np.asarray(Image.open(png))
    grid = grid[..., None] if grid.ndim == 2 else grid
    assert grid.shape[:2] == (layout.height, layout.width)
    s, shown = layout.scale, 0
    for r, row in enumerate(layout.cells):
        assert all(labels[i] == layout.rows[r] for i in row)
        for c, i in enumerate(row):
            top, left, bottom, right = layout.box(r, c)
            tile = grid[top:bottom, left:right]
            small = tile[::s, ::s]
            assert np.array_equal(np.repeat(np.repeat(small, s, axis=0), s, axis=1), tile)  # whole blocks
            assert np.array_equal(small.transpose(2, 0, 1), pixels[i])
            shown += 1
    assert (grid[: layout.pad] == 255).all() and (grid[:, : layout.pad] == 255).all()
    return shown


def test_page_references_only_files_it_wrote(report10, demo_runs):
    _assert_self_contained(report10)
    page = report10.read_text()
    names = {p.name for p in report10.parent.glob("*.png")}
    assert {"grid-distilled.png", "grid-initial.png", "loss.png", "validation.png", "window.png"} <= names
    assert "experts.png" in names  # the demo's shared experts: RUN/../experts
    ev = json.loads((demo_runs / "datm-ipc10" / "evaluation.json").read_text())
    for key in ("results", "random_baseline"):
        s = ev[key]["convnet"]
        assert f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}" in page
    assert str(ev["storage"]["bytes"]["total"]) in page
    assert "distill: &#x27;correct&#x27;" not in page and "init: correct" in page  # the config, escaped
    assert "<h1>datm on digits</h1>" in page


def test_grid_tiles_are_the_artifacts_images_in_viewing_space(report10, demo_runs):
    run = demo_runs / "datm-ipc10"
    for name, png in (("distilled", "grid-distilled.png"), ("distilled-initial", "grid-initial.png")):
        art = DistilledSet.load(run / name)
        pixels = viewer_for(art.meta).pixels(art.images).numpy()
        # a soft-label set is class-major: the rows are the classes the images were made for
        assert art.label_kind == "soft" and art.images.shape[0] == 10 * 10
        labels = [i // 10 for i in range(100)]
        shown = _tiles_equal(report10.parent / png, pixels, labels, art.num_classes)
        assert shown == 100


def test_image_grid_caps_classes_and_images_and_pads_white():
    labels = [0] * 12 + [1] * 2 + list(range(2, 12))
    pixels = torch.randint(0, 256, (len(labels), 3, 4, 5), dtype=torch.uint8).numpy()
    grid, layout = image_grid(pixels, labels, 12, pad=3)
    assert layout.rows == tuple(range(10)) and layout.columns == 10 and layout.capped
    assert layout.cells[0] == tuple(range(10)) and layout.cells[1] == (12, 13)
    assert layout.scale == 16 and grid.shape == (3 + 10 * (64 + 3), 3 + 10 * (80 + 3), 3)
    top, left, bottom, right = layout.box(1, 2)  # past class 1's two images: white
    assert (grid[top:bottom, left:right] == 255).all()
    top, left, bottom, right = layout.box(1, 1)
    assert np.array_equal(grid[top:bottom:16, left:right:16].transpose(2, 0, 1), pixels[13])


def test_report_without_initial_set_or_evaluation_says_so(tmp_path, demo_runs):
    run = tmp_path / "run"
    shutil.copytree(demo_runs / "datm-ipc1", run)
    write_report(run)  # a full report first: its figures must not outlive the pieces they showed
    assert (run / "report" / "grid-initial.png").exists()
    shutil.rmtree(run / "distilled-initial")
    (run / "evaluation.json").unlink()
    index = write_report(run)
    _assert_self_contained(index)
    page = index.read_text()
    assert not (run / "report" / "grid-initial.png").exists()
    assert "distilled-initial/ is missing" in page
    assert "No evaluation" in page and "distillset evaluate" in page
    assert "No expert trajectories found" in page  # the copy has no experts beside it
    assert (run / "report" / "grid-distilled.png").exists()


def test_every_result_present_gets_a_column(tmp_path, demo_runs):
    run = tmp_path / "run"
    shutil.copytree(demo_runs / "datm-ipc1", run)
    ev = json.loads((run / "evaluation.json").read_text())

    def summary(mean: float, std: float) -> dict:
        return {"convnet": {"mean": mean, "std": std, "runs": [mean]}}

    ev["label_hard"] = summary(0.1111, 0.0101)
    ev["baselines"] = {"herding": summary(0.2222, 0.0202)}
    ev["no_aug"] = {"distilled": summary(0.3333, 0.0303), "random": summary(0.4444, 0.0404)}
    ev["full_data"] = summary(0.9555, 0.0)
    score = {"mean": 0.0123, "std": 0.0045}
    ev["ddranking"] = {
        "w": 0.5,
        "gamma": 0.5,
        "models": {"convnet": {"hlr": score, "ior": score, "lrs": {"mean": 47.5, "std": 1.25}, "ars": score}},
    }
    ev["notes"] = ["a note from the evaluation"]
    (run / "evaluation.json").write_text(json.dumps(ev))
    page = write_report(run).read_text()
    for cell in ("11.11 ± 1.01", "22.22 ± 2.02", "33.33 ± 3.03", "44.44 ± 4.04", "95.55 ± 0.00"):
        assert cell in page
    assert "datm, hard labels" in page and "herding (fixed subset)" in page and "no DSA" in page
    assert "1.23 ± 0.45" in page and "47.50 ± 1.25" in page and "0.01 ± 0.00" in page  # points, as given
    assert "a note from the evaluation" in page
    if "soft_random_baseline" in ev:
        assert _pm(ev["soft_random_baseline"]["convnet"]) in page


def _pm(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def test_bad_run_directory_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for target, words in ((tmp_path / "missing", "not a run directory"), (tmp_path / "empty", "neither")):
        with pytest.raises(SystemExit) as exc:
            main(["report", str(target)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err and err.strip().count("\n") == 0
    with pytest.raises(DistillsetError):
        write_report(tmp_path / "missing")


def test_report_command_prints_where(demo_runs, capsys):
    main(["report", str(demo_runs / "datm-ipc1")])
    out = capsys.readouterr().out
    assert out.startswith("report written to ") and "index.html" in out
    assert (demo_runs / "datm-ipc1" / "report" / "index.html").exists()


def test_distributional_set_shows_means_and_fixed_samples(tmp_path):
    spec = DecoderSpec("small", 4, 1, 8, 8, 8, (-1.0,), (2.0,))
    torch.manual_seed(0)
    blocks = [
        {
            "offset": lo,
            "num_classes": 5,
            "latents": torch.randn(5, 4, 2),
            "decoder": Decoder(spec).state_dict(),
        }
        | {"alpha": 0.01}
        for lo in (0, 5)
    ]
    meta = {
        "method": "d3",
        "dataset": {"name": "digits"},
        "ipc": 1,
        "num_classes": 10,
        "class_names": [f"c{k}" for k in range(10)],
        "preprocessing": {"kind": "normalize", "mean": [0.3], "std": [0.4]},
    }
    art = LatentSet(spec, blocks, lpc=1, meta=meta)
    run = tmp_path / "d3"
    art.save(run / "distilled")
    index = write_report(run)
    _assert_self_contained(index)
    back = DistilledSet.load(run / "distilled")
    view = viewer_for(back.meta)
    labels = back.hard_labels.tolist()
    _tiles_equal(index.parent / "grid-distilled.png", view.pixels(back.means()).numpy(), labels, 10)
    draws = back.samples(generator(0, "report"), 3)  # 3 x N x C x H x W, prior-major below
    samples = draws.transpose(0, 1).reshape(-1, *draws.shape[2:])
    shown = _tiles_equal(
        index.parent / "grid-samples.png",
        view.pixels(samples).numpy(),
        [y for y in labels for _ in range(3)],
        10,
    )
    assert shown == 30
    page = index.read_text()
    assert "c9" in page and "No evaluation" in page and "no distillation log" in page
