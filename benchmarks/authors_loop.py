"""The authors' DATM/PAD outer iteration, restated on its own, to be timed beside our engines.

What `distill/DATM.py` (and PAD's `distill/PAD.py`, the same loop) does per iteration of its outer
optimiser, with only torch and the standard library, so that the engine benchmark can measure it in the
same run, on the same machine and under the same settings as `meta_loss` (`--engines ...,authors`):

- a fresh student network (their `get_network` + `ReparamModule`, built anew every iteration): their
  ConvNet, `depth` blocks of Conv3x3(width) -> GroupNorm(width, width) ("instancenorm") -> ReLU (in
  place) -> AvgPool 2x2, then one Linear from the flattened features; the first conv of a 1-channel
  input pads by 3 (28x28 -> 32x32);
- the student's parameters as one flat vector, as ReparamModule keeps them: the forward splits it into
  views shaped like the module's parameters and calls the module with them (`torch.func.functional_call`
  here; ReparamModule swaps the views in as attributes, which costs the same);
- the expert's start and target, held as per-parameter tensors on the CPU as a loaded replay buffer is,
  concatenated and moved to the device every iteration;
- `syn_steps` inner steps, each on the next chunk of a random permutation of the synthetic images
  (`batch_syn` images; with all of them, every step takes every image), with DSA (one augmentation
  family per call, drawn at random; a fresh draw per image, no shared "Siamese" parameters), the soft
  cross-entropy against the learnable label logits (`sum(-log_softmax(out) * softmax(y)) / batch`) or,
  with hard labels, plain cross-entropy (MTT's), `torch.autograd.grad(..., create_graph=True)` and
  `theta - syn_lr * grad`, every step's flat vector kept;
- the normalised matching loss `(||theta_N - target||^2 / P) / (||theta_0 - target||^2 / P)`;
- `.backward()` into the images, the learnable lr and the label logits, then their three SGD steps
  (images: lr_img, momentum 0.5; lr: lr_lr, momentum 0.5; labels: lr_y, momentum 0.9), taken when the
  loss is at most `threshold` (their configs: 1.0; here infinite by default, so the steps are always
  timed).

Defaults are their CIFAR-10 IPC 10 config (lr_img 100, lr_lr 1e-5, lr_y 2, lr_teacher 0.01). The expert
is random (the start: a freshly initialised network; the target: the start plus small noise): its values
do not change the time. Left out, as small beside the inner loop or outside DATM's iteration: their
logging, evaluation and checkpoints; `get_network`'s reseeding of the global generator from the clock
(here one seed makes a run repeatable); the Python loops that build the scale and rotate matrices image by
image (vectorised here); PAD's optional sort of the per-parameter errors (`loss_ratio`). One change: a
1-channel batch is laid out as NCHW after DSA (see `diff_augment`), as it is with 3 channels.

    python benchmarks/authors_loop.py --model small --steps 10 --iters 2 --labels soft

prints one JSON line: seconds per iteration (after one warm-up iteration) and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"

# The engine benchmark's two settings (`MODELS` of engine_bench.py, which imports distillset; a test
# checks that the two stay equal): IPC 10 of 10 classes, batch_syn = all 100 images.
MODELS: dict[str, dict[str, Any]] = {
    "big": {
        "label": "ConvNet-128-3, 3x32x32",
        "shape": [3, 32, 32],
        "width": 128,
        "depth": 3,
        "classes": 10,
        "images": 100,
        "strategy": DEFAULT_STRATEGY,
    },
    "small": {
        "label": "ConvNet-64-3, 1x28x28",
        "shape": [1, 28, 28],
        "width": 64,
        "depth": 3,
        "classes": 10,
        "images": 100,
        "strategy": DIGITS_STRATEGY,
    },
}


# ------------------------------------------------------------------------------------------------
# their ConvNet


class ConvNet(nn.Module):
    """Their ConvNet (net_act relu, net_norm instancenorm, net_pooling avgpooling) for C x H x W inputs.

    The size of the flattened features is worked out from the convolutions' padding (their bookkeeping
    assumes 28x28 for every 1-channel input; the result is the same there).
    """

    def __init__(self, channel: int, num_classes: int, width: int, depth: int, im_size: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        h, w = int(im_size[0]), int(im_size[1])
        in_channels = channel
        for d in range(depth):
            pad = 3 if channel == 1 and d == 0 else 1
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=pad),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            h, w = (h + 2 * pad - 2) // 2, (w + 2 * pad - 2) // 2
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


# ------------------------------------------------------------------------------------------------
# their DSA (ParamDiffAug, aug_mode "S": one family per call)


@dataclass(frozen=True)
class ParamDiffAug:
    """Their DSA constants."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    # The matrices are drawn on the CPU and the grid moved to the images' device, as they do.
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True).to(x.device)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x: Tensor, p: ParamDiffAug) -> Tensor:
    n, r = x.shape[0], p.ratio_scale
    sx = torch.rand(n) * (r - 1.0 / r) + 1.0 / r
    sy = torch.rand(n) * (r - 1.0 / r) + 1.0 / r
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta)


def _rotate(x: Tensor, p: ParamDiffAug) -> Tensor:
    n = x.shape[0]
    angle = (torch.rand(n) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return _affine(x, theta)


def _flip(x: Tensor, p: ParamDiffAug) -> Tensor:
    coin = torch.rand(x.size(0), 1, 1, 1, device=x.device)
    return torch.where(coin < p.prob_flip, x.flip(3), x)


def _brightness(x: Tensor, p: ParamDiffAug) -> Tensor:
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return x + (r - 0.5) * p.brightness


def _saturation(x: Tensor, p: ParamDiffAug) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return (x - mean) * (r * p.saturation) + mean


def _contrast(x: Tensor, p: ParamDiffAug) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return (x - mean) * (r + p.contrast) + mean


def _index_grid(n: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return torch.meshgrid(
        torch.arange(n, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )


def _crop(x: Tensor, p: ParamDiffAug) -> Tensor:
    """A random shift of up to 1/8 of the size, by gathering from the image zero-padded by one pixel."""
    n, _, h, w = x.shape
    sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    dy = torch.randint(-sh, sh + 1, size=[n, 1, 1], device=x.device)
    dx = torch.randint(-sw, sw + 1, size=[n, 1, 1], device=x.device)
    b, gy, gx = _index_grid(n, h, w, x.device)
    gy = torch.clamp(gy + dy + 1, 0, h + 1)
    gx = torch.clamp(gx + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[b, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: Tensor, p: ParamDiffAug) -> Tensor:
    """A half-size square at a random place set to zero, through a mask."""
    n, _, h, w = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), size=[n, 1, 1], device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), size=[n, 1, 1], device=x.device)
    b, gy, gx = _index_grid(n, ch, cw, x.device)
    gy = torch.clamp(gy + oy - ch // 2, min=0, max=h - 1)
    gx = torch.clamp(gx + ox - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS = {
    "color": (_brightness, _saturation, _contrast),
    "crop": (_crop,),
    "cutout": (_cutout,),
    "flip": (_flip,),
    "scale": (_scale,),
    "rotate": (_rotate,),
}


def diff_augment(x: Tensor, strategy: str, param: ParamDiffAug) -> Tensor:
    """One family of `strategy` (families joined by "_"), drawn uniformly, applied to the whole batch."""
    if not strategy or strategy.lower() == "none":
        return x
    families = strategy.split("_")
    family = families[int(torch.randint(0, len(families), size=(1,)).item())]
    for f in AUGMENTATIONS[family]:
        x = f(x, param)
    x = x.contiguous()
    if x.size(1) == 1 and x.stride(1) == 1 and x.size(2) * x.size(3) > 1:
        # A 1-channel crop keeps the gather's channels-last strides, which count as contiguous (a size-1
        # dimension's stride is free): the convolutions would then run channels-last and the flatten's
        # `view` fail. Laid out as NCHW, as `.contiguous()` does for more channels.
        x = x.clone(memory_format=torch.contiguous_format)
    return x


# ------------------------------------------------------------------------------------------------
# the outer iteration


@dataclass
class AuthorsState:
    """Everything one outer iteration needs, and the phase times of the last one."""

    channel: int
    im_size: tuple[int, int]
    classes: int
    width: int
    depth: int
    names: list[str]
    numels: list[int]
    shapes: list[torch.Size]
    images: Tensor
    label_syn: Tensor
    syn_lr: Tensor
    expert_start: list[Tensor]
    expert_target: list[Tensor]
    optimizer_img: torch.optim.Optimizer
    optimizer_lr: torch.optim.Optimizer
    optimizer_y: torch.optim.Optimizer | None
    syn_steps: int
    batch_syn: int
    soft: bool
    strategy: str
    dsa: bool
    dsa_param: ParamDiffAug
    threshold: float
    device: torch.device
    dtype: torch.dtype
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0

    @property
    def num_params(self) -> int:
        return sum(self.numels)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build(
    model: str | None = "small",
    *,
    ipc: int = 10,
    classes: int = 10,
    syn_steps: int = 10,
    batch_syn: int | None = None,
    labels: str = "soft",
    device: str | torch.device = "cpu",
    seed: int = 0,
    width: int | None = None,
    depth: int | None = None,
    shape: Sequence[int] | None = None,
    strategy: str | None = None,
    dsa: bool = True,
    lr: float = 0.01,
    lr_img: float = 100.0,
    lr_lr: float = 1e-5,
    lr_y: float = 2.0,
    momentum_y: float = 0.9,
    threshold: float = math.inf,
    dtype: torch.dtype = torch.float32,
) -> AuthorsState:
    """The synthetic set, the learnable lr and labels, their optimisers and a random expert segment.

    model: "big" or "small" (as in the engine benchmark), whose width, depth, shape and DSA strategy are
    the defaults of the explicit arguments; None: give width, depth and shape. batch_syn None: all
    ipc * classes images every step. labels "soft": learnable label logits (initialised to 5 x one-hot);
    "hard": fixed class indices. dsa False: no augmentation (a deterministic iteration, for the tests).
    """
    if labels not in ("soft", "hard"):
        raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}.")
    spec = MODELS[model] if model is not None else {}
    width = int(width if width is not None else spec["width"])
    depth = int(depth if depth is not None else spec["depth"])
    c, h, w = (int(s) for s in (shape if shape is not None else spec["shape"]))
    strategy = strategy if strategy is not None else spec.get("strategy", DEFAULT_STRATEGY)
    dev = _resolve_device(device)
    torch.manual_seed(seed)

    net = ConvNet(c, classes, width, depth, (h, w))
    params = dict(net.named_parameters())
    # The expert: a freshly initialised network as the start, the start plus small noise as the target,
    # per parameter on the CPU like a loaded replay buffer.
    start = [p.detach().to(dtype).clone() for p in params.values()]
    target = [p + 0.01 * torch.randn_like(p) for p in start]

    n = ipc * classes
    images = torch.randn(n, c, h, w, dtype=dtype).to(dev).requires_grad_(True)
    hard = torch.arange(classes).repeat_interleave(ipc)  # [0, 0, ..., 1, 1, ..., classes - 1]
    soft = labels == "soft"
    if soft:
        label_syn = (5.0 * F.one_hot(hard, classes).to(dtype)).to(dev).requires_grad_(True)
    else:
        label_syn = hard.to(dev)
    syn_lr = torch.tensor(lr, dtype=dtype).to(dev).requires_grad_(True)
    return AuthorsState(
        channel=c,
        im_size=(h, w),
        classes=classes,
        width=width,
        depth=depth,
        names=list(params),
        numels=[p.numel() for p in params.values()],
        shapes=[p.shape for p in params.values()],
        images=images,
        label_syn=label_syn,
        syn_lr=syn_lr,
        expert_start=start,
        expert_target=target,
        optimizer_img=torch.optim.SGD([images], lr=lr_img, momentum=0.5),
        optimizer_lr=torch.optim.SGD([syn_lr], lr=lr_lr, momentum=0.5),
        optimizer_y=torch.optim.SGD([label_syn], lr=lr_y, momentum=momentum_y) if soft else None,
        syn_steps=int(syn_steps),
        batch_syn=int(batch_syn) if batch_syn else n,
        soft=soft,
        strategy=strategy,
        dsa=dsa,
        dsa_param=ParamDiffAug(),
        threshold=float(threshold),
        device=dev,
        dtype=dtype,
    )


def _criterion(state: AuthorsState, out: Tensor, y: Tensor) -> Tensor:
    if state.soft:
        return torch.sum(-F.log_softmax(out, dim=1) * F.softmax(y, dim=1)) / out.shape[0]
    return F.cross_entropy(out, y)


def matching_loss(state: AuthorsState, syn_steps: int | None = None) -> Tensor:
    """The unrolled inner loop and the normalised matching loss (with its graph), as their loop does."""
    # Their get_network + ReparamModule, anew every iteration; its own weights are never used.
    student_net = ConvNet(state.channel, state.classes, state.width, state.depth, state.im_size)
    student_net = student_net.to(state.device, state.dtype)
    student_net.train()
    num_params = state.num_params

    target_params = torch.cat([p.to(state.device).reshape(-1) for p in state.expert_target], 0)
    student_params = [
        torch.cat([p.to(state.device).reshape(-1) for p in state.expert_start], 0).requires_grad_(True)
    ]
    starting_params = torch.cat([p.to(state.device).reshape(-1) for p in state.expert_start], 0)

    chunks: list[Tensor] = []
    for _ in range(state.syn_steps if syn_steps is None else syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(len(state.images)), state.batch_syn))
        these = chunks.pop()
        x = state.images[these]
        y = state.label_syn[these]
        if state.dsa:
            x = diff_augment(x, state.strategy, state.dsa_param)
        flat = student_params[-1]
        views = [t.view(s) for t, s in zip(flat.split(state.numels), state.shapes, strict=True)]
        out = torch.func.functional_call(student_net, dict(zip(state.names, views, strict=True)), (x,))
        ce = _criterion(state, out, y)
        grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - state.syn_lr * grad)

    param_loss = F.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
    param_dist = F.mse_loss(starting_params, target_params, reduction="sum") / num_params
    return param_loss / param_dist


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iteration(state: AuthorsState, syn_steps: int | None = None) -> float:
    """One outer iteration: the matching loss, its backward and the three SGD steps; returns the loss.

    Records the seconds of the two phases in `state.forward_seconds` (student, inner loop, loss) and
    `state.backward_seconds` (backward and optimiser steps). syn_steps: this iteration only (a short
    warm-up).
    """
    _sync(state.device)
    t0 = time.perf_counter()
    grand_loss = matching_loss(state, syn_steps)
    _sync(state.device)
    t1 = time.perf_counter()
    optimizers = [o for o in (state.optimizer_img, state.optimizer_lr, state.optimizer_y) if o is not None]
    for o in optimizers:
        o.zero_grad()
    grand_loss.backward()
    if grand_loss <= state.threshold:
        # Their order: labels, images, lr.
        for o in (state.optimizer_y, state.optimizer_img, state.optimizer_lr):
            if o is not None:
                o.step()
    _sync(state.device)
    t2 = time.perf_counter()
    state.forward_seconds, state.backward_seconds = t1 - t0, t2 - t1
    return float(grand_loss.detach())


# ------------------------------------------------------------------------------------------------
# the command line


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--steps", type=int, default=10, help="syn_steps")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations (after one warm-up)")
    parser.add_argument("--labels", choices=["soft", "hard"], default="soft")
    parser.add_argument("--batch-syn", type=int, default=None, help="images per inner step (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = _resolve_device(args.device)
    # As the engine benchmark's children: a fixed number of torch threads on the CPU.
    threads = int(os.environ.get("OMP_NUM_THREADS", 2))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    spec = MODELS[args.model]
    state = build(
        args.model,
        ipc=spec["images"] // spec["classes"],
        classes=spec["classes"],
        syn_steps=args.steps,
        batch_syn=args.batch_syn,
        labels=args.labels,
        device=device,
        seed=args.seed,
    )
    iteration(state)  # warm-up
    seconds, forward, backward, losses = [], [], [], []
    for _ in range(max(1, args.iters)):
        losses.append(iteration(state))
        forward.append(state.forward_seconds)
        backward.append(state.backward_seconds)
        seconds.append(forward[-1] + backward[-1])
    out = {
        "engine": "authors",
        "model": args.model,
        "syn_steps": args.steps,
        "labels": args.labels,
        "batch_syn": state.batch_syn,
        "device": str(device),
        "threads": threads if device.type == "cpu" else None,
        "params": state.num_params,
        "iters": len(seconds),
        "seconds_per_iteration": sum(seconds) / len(seconds),
        "seconds": seconds,
        "forward_seconds": sum(forward) / len(forward),
        "backward_seconds": sum(backward) / len(backward),
        "loss": losses[0],
        "peak_rss_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
