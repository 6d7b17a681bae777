"""Materialise a distributional artifact as images: `samples.safetensors` and one PNG per image.

The images are stored as the network sees them (the artifact's preprocessing applied); the PNGs are in
viewing space (see viewing.py: mean/std undone, ZCA inverted when its training data are at hand).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import integrity
from ..utils import generator, write_json
from .latent_artifact import LatentSet
from .viewing import pil_image, viewer_for


def write_samples(art: LatentSet, n: int, out: Path, seed: int = 0) -> int:
    """Every prior's decoded mean and `n` fresh samples of it (drawn from `seed`); returns the count."""
    decoders = art.decoders()
    means = art.means(decoders=decoders)
    drawn = art.samples(generator(seed, "sample"), n, decoders=decoders).flatten(0, 1) if n else means[:0]
    images = torch.cat([means, drawn])
    labels = art.hard_labels.repeat(1 + n)
    kinds = ["mean"] * art.num_priors + ["sample"] * (n * art.num_priors)
    tensors = {"images": images.contiguous(), "labels": labels.contiguous()}
    if art.soft_labels is not None:
        tensors["soft_labels"] = art.soft_labels.repeat(1 + n, 1).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    integrity.save(out / "samples.safetensors", tensors)
    pixels = viewer_for(art.meta).pixels(images)
    names = art.meta.get("class_names") or [str(c) for c in range(art.num_classes)]
    for i, (img, label, kind) in enumerate(zip(pixels, labels.tolist(), kinds, strict=True)):
        folder = out / "png" / f"{label:03d}-{names[label]}"
        folder.mkdir(parents=True, exist_ok=True)
        pil_image(img.permute(1, 2, 0).numpy()).save(folder / f"{kind}-{i % art.num_priors:05d}-{i:06d}.png")
    write_json(
        out / "samples.json",
        {"means": art.num_priors, "samples_per_prior": n, "seed": seed, "images": int(images.shape[0])},
    )
    return int(images.shape[0])
