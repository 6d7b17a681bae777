"""Initialisations of a synthetic set from real data: random real images per class (MTT), images the
experts classify correctly (DATM), and label logits from the experts (DATM's soft labels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import DataError


def class_indices(y: Tensor, c: int, ipc: int) -> Tensor:
    """The indices (on the CPU) of class `c` in `y`; stops if the class has fewer than `ipc` images."""
    idx = torch.nonzero(y.cpu() == c, as_tuple=False).flatten()
    if idx.numel() < ipc:
        raise DataError(f"class {c} has {idx.numel()} training images, fewer than ipc={ipc}; lower data.ipc.")
    return idx


def random_real_indices(y: Tensor, ipc: int, num_classes: int, gen: torch.Generator) -> Tensor:
    """`ipc` distinct random indices per class, class-major (class 0's first), drawn from `gen`.

    The random-real baseline and MTT's initialisation.
    """
    y = y.cpu()
    out = []
    for c in range(num_classes):
        idx = class_indices(y, c, ipc)
        out.append(idx[torch.randperm(idx.numel(), generator=gen)[:ipc]])
    return torch.cat(out)


Classifier = Callable[[Tensor], Tensor]  # images -> logits


@torch.no_grad()
def _logits(classifier: Classifier, x: Tensor, batch: int = 512) -> Tensor:
    return torch.cat([classifier(x[s : s + batch]) for s in range(0, x.shape[0], batch)]) if len(x) else x


def correct_real_indices(
    x: Tensor,
    y: Tensor,
    ipc: int,
    num_classes: int,
    classifiers: Sequence[Classifier],
    gen: torch.Generator,
) -> tuple[Tensor, int]:
    """DATM's initialisation: per class, walk a random permutation and keep images the first classifier
    (expert 0's final snapshot) gets right, until `ipc` are found; if a class runs out, the next classifier
    judges the images not yet taken, and so on. If every classifier runs out, the rest of the class is
    taken in random order (counted in the second return value, which the caller reports).

    Returns class-major indices (class 0's first) and how many were filled in without a correct prediction.
    """
    y_cpu = y.cpu()
    out, filled = [], 0
    for c in range(num_classes):
        idx = class_indices(y_cpu, c, ipc)
        remaining = idx[torch.randperm(idx.numel(), generator=gen)]
        chosen: list[Tensor] = []
        for classify in classifiers:
            need = ipc - sum(t.numel() for t in chosen)
            if need == 0 or remaining.numel() == 0:
                break
            pred = _logits(classify, x[remaining.to(x.device)]).argmax(dim=1).cpu()
            ok = pred == c
            take = remaining[ok][:need]
            chosen.append(take)
            remaining = remaining[~torch.isin(remaining, take)]
        need = ipc - sum(t.numel() for t in chosen)
        if need:
            chosen.append(remaining[:need])
            filled += need
        out.append(torch.cat(chosen))
    return torch.cat(out), filled


@torch.no_grad()
def expert_label_logits(
    x: Tensor, y: Tensor, classifiers: Sequence[Classifier], mean_over_correct: bool = True
) -> Tensor:
    """DATM's soft-label initialisation: per image, the mean logits of the classifiers (the experts' final
    snapshots) that classify it correctly; an image no classifier gets right (or every image, with
    `mean_over_correct=False`, as for DATM's random-real initialisation) takes the first classifier's.
    """
    logits = torch.stack([_logits(c, x) for c in classifiers])  # K x N x C
    first = logits[0]
    if not mean_over_correct:
        return first.clone()
    correct = (logits.argmax(dim=2) == y.to(logits.device).unsqueeze(0)).to(logits.dtype)  # K x N
    count = correct.sum(dim=0)
    mean = (logits * correct.unsqueeze(2)).sum(dim=0) / count.clamp(min=1).unsqueeze(1)
    return torch.where((count > 0).unsqueeze(1), mean, first)


def representative_real_indices(
    x: Tensor, y: Tensor, ipc: int, num_classes: int, classifier: Classifier, seed: int
) -> Tensor:
    """AST's representative initialisation: per class, k-means with k = `ipc` on an expert's logits of
    the class's real images, then the real image nearest each centre (distinct images, class-major).

    The authors' code clusters into 10 groups and takes IPC/10 images from each, which selects nothing
    at IPC 1; here k = IPC at every IPC. scikit-learn's k-means, seeded by `seed`.
    """
    from sklearn.cluster import KMeans

    out = []
    for c in range(num_classes):
        idx = class_indices(y, c, ipc)
        feats = _logits(classifier, x[idx.to(x.device)]).double().cpu()
        km = KMeans(n_clusters=ipc, n_init=10, random_state=seed % (2**32)).fit(feats.numpy())
        dist = torch.cdist(torch.from_numpy(km.cluster_centers_), feats)  # ipc x n_c
        chosen: list[int] = []
        for row in dist:  # nearest image per centre, skipping images another centre took
            for j in torch.argsort(row, stable=True).tolist():
                if j not in chosen:
                    chosen.append(j)
                    break
        out.append(idx[torch.tensor(chosen, dtype=torch.long)])
    return torch.cat(out)
