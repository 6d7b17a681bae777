"""Seconds and peak memory per outer iteration of the meta-gradient engines (unroll, tesla, adjoint).

One outer iteration is `meta_loss` plus `.backward()`: the meta-gradient of the trajectory-matching loss
into 100 synthetic images (hard labels, or learnable label logits with --labels soft) and the learnable
synthetic lr, after syn_steps plain-SGD inner steps on all images with DSA on every step. Measured for
ConvNet-128-3 on 3x32x32 ("big") and ConvNet-64-3 on 1x28x28 ("small") at syn_steps 10, 20, 40, 80, each
cell in its own subprocess (peak RSS on the CPU, peak allocated memory on CUDA); cells whose extrapolated
memory would not fit are skipped. Compares unroll with the authors' figures measured on the same machine.

Writes benchmarks/results/engine.{json,md}. Same as `distillset bench engine`.
Usage: python benchmarks/engine.py [--steps 10,20,40,80] [--engines unroll,tesla,adjoint]
                                   [--models big,small] [--iters auto|N] [--out DIR] [--device auto]
                                   [--labels hard|soft] [--allocator default|reuse] [--resume]
"""

from __future__ import annotations

from distillset.bench import engine_main

if __name__ == "__main__":
    engine_main()
