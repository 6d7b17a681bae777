"""Artifacts in viewing space: mean/std undone from the manifest, ZCA inverted with the whitening refitted on
the artifact's training split (checked against the manifest's fingerprint), min-max when it cannot be."""

from __future__ import annotations

import copy

import torch

from distillset.baseline import random_subset
from distillset.config import load_config
from distillset.data.prepared import load_from_config, prepare
from distillset.synthetic.viewing import viewer_for

TINY = ["data.ipc=3", "device=cpu"]


def _raw_images(cfg, art):  # noqa: ANN001, ANN202
    """The [0, 1] training images the random subset picked, found by their preprocessed copies."""
    ds = load_from_config(cfg.data)
    data = prepare(cfg.data, torch.device("cpu"), ds)
    flat = data.train_x.flatten(1)
    idx = [int(torch.cdist(img.flatten()[None], flat).argmin()) for img in art.images]
    return ds.train.x[idx].float()


def test_mean_std_is_undone_from_the_manifest_alone():
    cfg = load_config("random-digits", TINY)
    art = random_subset(cfg, prepare(cfg.data, torch.device("cpu")))
    viewer = viewer_for(art.meta)
    assert viewer.kind == "normalize" and viewer.exact
    torch.testing.assert_close(viewer(art.images), _raw_images(cfg, art), atol=1e-5, rtol=0)
    assert viewer.pixels(art.images).dtype == torch.uint8


def test_zca_is_inverted_with_the_refitted_whitening():
    cfg = load_config("random-digits", [*TINY, "data.zca=true"])
    art = random_subset(cfg, prepare(cfg.data, torch.device("cpu")))
    assert art.meta["preprocessing"]["kind"] == "zca"
    viewer = viewer_for(art.meta)
    assert viewer.kind == "zca" and viewer.exact and "ZCA inverted" in viewer.how
    torch.testing.assert_close(viewer(art.images), _raw_images(cfg, art), atol=1e-4, rtol=0)


def test_zca_falls_back_to_min_max_when_the_data_differ_or_are_missing(tmp_path):
    cfg = load_config("random-digits", [*TINY, "data.zca=true"])
    art = random_subset(cfg, prepare(cfg.data, torch.device("cpu")))
    other = copy.deepcopy(art.meta)
    other["dataset"]["fingerprint"] = "0" * 16  # made from other training data
    viewer = viewer_for(other)
    assert viewer.kind == "minmax" and not viewer.exact and "differ" in viewer.how
    shown = viewer(art.images)
    assert torch.allclose(shown.flatten(1).amin(1), torch.zeros(len(shown)))
    assert torch.allclose(shown.flatten(1).amax(1), torch.ones(len(shown)))

    gone = copy.deepcopy(art.meta)
    gone["config"]["data"].update({"name": "mnist", "root": str(tmp_path / "nowhere")})
    viewer = viewer_for(gone)
    assert viewer.kind == "minmax" and "not at hand" in viewer.how

    # the same data, a whitening fitted elsewhere (another device's rounding): still inverted
    rounded = copy.deepcopy(art.meta)
    rounded["preprocessing"]["zca_fingerprint"] = "0" * 16
    viewer = viewer_for(rounded)
    assert viewer.kind == "zca" and "up to rounding" in viewer.how
    torch.testing.assert_close(viewer(art.images), _raw_images(cfg, art), atol=1e-4, rtol=0)
