"""Images as a person sees them: the network's input space mapped back to [0, 1] pixels.

An artifact stores its images as the network sees them (after mean/std normalisation or ZCA). Mean/std is
undone from the manifest alone. ZCA needs the whitening matrix, which the artifact does not carry: it is
fitted again on the artifact's training split (the manifest names the dataset and the split, whose
fingerprint the data at hand must reproduce, and the ZCA's fingerprint, which a refit on another device
may miss by rounding). When the data are not on this machine, or differ, the images are shown min-max
scaled per image instead, and `Viewer.exact` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.preprocess import Normalize
from ..errors import DistillsetError


@dataclass
class Viewer:
    """Maps network-input images (N x C x H x W) to [0, 1] pixels; `exact` is False for the min-max
    fallback (ZCA'd images whose training data are not at hand). `how` says which, in words."""

    kind: str  # "normalize" | "zca" | "minmax"
    exact: bool
    how: str
    _inverse: object = None

    def __call__(self, x: Tensor) -> Tensor:
        x = x.detach().float().cpu()
        if self.kind == "minmax":
            lo = x.flatten(1).amin(1).view(-1, 1, 1, 1)
            hi = x.flatten(1).amax(1).view(-1, 1, 1, 1)
            return (x - lo) / (hi - lo).clamp_min(1e-12)
        return self._inverse(x).clamp(0, 1)

    def pixels(self, x: Tensor) -> Tensor:
        """uint8 pixels (N x C x H x W): round(255 * view)."""
        return (self(x) * 255).round().to(torch.uint8)


def normalize_viewer(preprocessing: dict) -> Viewer:
    inverse = Normalize(preprocessing["mean"], preprocessing["std"]).inverse
    return Viewer("normalize", True, "mean/std normalisation undone", inverse)


def pil_image(pixels: np.ndarray):  # noqa: ANN201 (a PIL image)
    """The PIL image of uint8 H x W x C pixels: grey ("L") for one channel, else RGB."""
    from PIL import Image

    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def minmax_viewer(why: str) -> Viewer:
    return Viewer("minmax", False, f"min-max scaled per image ({why})")


def viewer_for(meta: dict, root: str | None = None) -> Viewer:
    """The viewer of an artifact's images, from its manifest `meta` (preprocessing, config, dataset).

    ZCA'd images are inverted with the ZCA refitted on the artifact's training split (loaded from its
    `data` config, or from `root`); if the data cannot be loaded or are not the artifact's, the min-max
    fallback."""
    prep = meta.get("preprocessing") or {}
    if prep.get("kind") == "normalize":
        return normalize_viewer(prep)
    if prep.get("kind") != "zca":
        return minmax_viewer("the manifest names no preprocessing")
    from ..data.prepared import load_from_config
    from ..data.preprocess import fit_preprocessor
    from ..evaluate import data_config_of

    try:
        ds = load_from_config(data_config_of(meta, root))
    except (DistillsetError, OSError, ValueError) as e:
        return minmax_viewer(f"ZCA: the training data to refit it are not at hand: {e}")
    want_data = (meta.get("dataset") or {}).get("fingerprint")
    if want_data is not None and ds.fingerprint() != want_data:
        return minmax_viewer("ZCA: the training data at hand differ from the artifact's")
    fitted = fit_preprocessor(ds.train.x, ds.mean, ds.std, zca=True, eps=prep.get("zca_eps", 0.1))
    if prep.get("zca_fingerprint") in (None, fitted.fingerprint()):
        return Viewer("zca", True, "ZCA inverted (refitted on the training split)", fitted.inverse)
    # the same training split and eps: a fit on another device differs from the artifact's in rounding only
    how = "ZCA inverted (refitted on the same training split; equal to the artifact's up to rounding)"
    return Viewer("zca", True, how, fitted.inverse)
