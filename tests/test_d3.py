"""D3: decoders, the unbiased MMD, the meta-gradient into the decoder, sub-tasks, storage, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from distillset.cli import main
from distillset.config import D3Config, load_config
from distillset.federated import class_blocks, merge, restrict
from distillset.inner import Student, meta_loss, sample_plan
from distillset.models import build_model
from distillset.models.params import flat_params
from distillset.objectives import ParameterMatch
from distillset.objectives.mmd import mmd2_unbiased
from distillset.synthetic import DistilledSet, LatentPriors, LatentSet
from distillset.synthetic.decoders import Decoder, DecoderSpec, num_parameters

TINY = [
    "experts.num_experts=2",
    "experts.train_epochs=4",
    "distill.iterations=4",
    "distill.syn_steps=3",
    "distill.max_start_epoch=2",
    "distill.eval_every=2",
    "distill.eval_epochs=3",
    "distill.checkpoint_every=2",
    "d3.label_epoch=2",
    "d3.mmd_samples=4",
    "model.width=16",
    "eval.runs=2",
    "eval.epochs=6",
    "eval.val_every=3",
]


def _spec(size, z, shape, k=None, low=-1.0, high=2.0):
    c, h, w = shape
    k = k or {"small": 256, "medium": 512, "large": 1024}[size]
    return DecoderSpec(size, z, c, h, w, k, (low,) * c, (high,) * c)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_each_decoder_gives_the_data_shape_in_the_data_range(shape):
    for size, z, k in (("small", 16, 32), ("medium", 64, 64), ("large", 4 * 32, 32)):
        dec = Decoder(_spec(size, z, shape, k))
        x = dec(torch.randn(3, z))
        assert x.shape == (3, *shape)
        assert float(x.min()) >= -1.0 and float(x.max()) <= 2.0  # tanh mapped to [low, high]


def test_decoder_parameter_counts_at_64_pixels_are_the_spec():
    counts = {
        size: num_parameters(Decoder(_spec(size, z, (3, 64, 64))))
        for size, z in (("small", 64), ("medium", 2048), ("large", 4096))
    }
    assert counts == {"small": 789_187, "medium": 5_774_691, "large": 6_308_547}


def test_decoder_batchnorm_uses_the_batch_statistics():
    dec = Decoder(_spec("small", 8, (1, 8, 8), 8)).eval()
    z = torch.randn(4, 8)
    alone = dec(z[:2])
    together = dec(z)[:2]
    assert not torch.allclose(alone, together)  # batch statistics, even in eval mode
    assert not list(dec.buffers()) or all(b.numel() <= 1 for b in dec.state_dict().values() if b.dim() == 0)


def test_large_decoder_needs_z_four_times_its_width():
    with pytest.raises(Exception, match="4 x k"):
        _spec("large", 100, (3, 64, 64))


def test_unbiased_mmd_matches_a_hand_example():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    # k = exp(-d^2 / 2): XX off-diagonal e^-1/2, YY e^-2, XY mean (1 + e^-2 + 2 e^-1/2) / 4
    want = math.exp(-0.5) + math.exp(-2) - 2 * (1 + math.exp(-2) + 2 * math.exp(-0.5)) / 4
    assert float(mmd2_unbiased(x, y, sigmas=(1.0,))) == pytest.approx(want, rel=1e-6)
    # the mixture is the sum of the single-bandwidth estimates
    both = mmd2_unbiased(x, y, sigmas=(1.0, 2.0))
    assert float(both) == pytest.approx(float(mmd2_unbiased(x, y, (1.0,)) + mmd2_unbiased(x, y, (2.0,))))


def test_unbiased_mmd_is_near_zero_for_one_distribution_and_not_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 5, generator=g), torch.randn(400, 5, generator=g)
    same = float(mmd2_unbiased(a, b))
    apart = float(mmd2_unbiased(a, b + 1.5))
    assert abs(same) < 0.01 and apart > 0.3


def _priors(dtype=torch.float64):
    cfg = D3Config(lpc=2, z_dim=6, kernel_num=8, lr_latent=0.1, lr_decode=1e-3)
    spec = _spec("small", 6, (1, 8, 8), 8, low=-1.0, high=1.0)
    gen = torch.Generator().manual_seed(1)
    s = LatentPriors.initial(cfg, spec, 3, 0.05, 1e-5, 0.5, gen, torch.device("cpu"))
    s.latents.data = s.latents.data.to(dtype)
    s.alpha.data = s.alpha.data.to(dtype)
    s.decoder.to(dtype)
    s.decoder.low, s.decoder.high = s.decoder.low.to(dtype), s.decoder.high.to(dtype)
    return s


def _meta_grads(engine):
    torch.manual_seed(0)
    syn = _priors()
    model = build_model("convnet", (1, 8, 8), 3, width=4, depth=2).double()
    student = Student.of(model)
    theta0 = flat_params(model).double()
    target = theta0 + 0.05 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(3)).double()
    gen = torch.Generator().manual_seed(5)
    plan = sample_plan(len(syn), 4, 4, (8, 8), None, gen)
    images, targets, plan = syn.inner_batches(plan, gen)
    loss = meta_loss(
        engine, student, theta0, images, targets, syn.lr, plan, {4: ParameterMatch(theta0, target)}
    )
    loss.backward()
    grads = [syn.latents.grad, syn.alpha.grad, *[p.grad for p in syn.decoder.parameters()]]
    return float(loss), [g.clone() for g in grads]


def test_adjoint_meta_gradient_into_decoder_and_latents_equals_the_unrolled_one_in_float64():
    loss_u, unrolled = _meta_grads("unroll")
    loss_a, adjoint = _meta_grads("adjoint")
    assert loss_a == pytest.approx(loss_u, rel=1e-12)
    for a, u in zip(adjoint, unrolled, strict=True):
        assert torch.allclose(a, u, rtol=1e-8, atol=1e-14)
    assert float(unrolled[0].abs().sum()) > 0 and float(unrolled[-2].abs().sum()) > 0


def test_a_fresh_sample_at_every_inner_step():
    syn = _priors(torch.float32)
    gen = torch.Generator().manual_seed(0)
    plan = sample_plan(len(syn), 3, None, (8, 8), None, gen)
    images, labels, replan = syn.inner_batches(plan, gen)
    assert images.shape == (3 * len(syn), 1, 8, 8) and replan.steps == 3
    steps = [images[b] for b in replan.batches]
    # the same priors, put back in prior order: a fresh sample each step, not the mean twice (which
    # would differ only by the batch's summation order)
    first, second = steps[0][torch.argsort(plan.batches[0])], steps[1][torch.argsort(plan.batches[1])]
    assert float((first - second).abs().mean()) > 1e-2
    assert torch.equal(labels[replan.batches[0]], syn.labels[plan.batches[0]])


@pytest.mark.parametrize(("classes", "k"), [(10, 3), (7, 2), (5, 5), (10, 1)])
def test_class_blocks_cover_every_class_contiguously(classes, k):
    blocks = class_blocks(classes, k)
    assert len(blocks) == k and blocks[0][0] == 0 and blocks[-1][1] == classes
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1 and all(blocks[i][1] == blocks[i + 1][0] for i in range(k - 1))


def test_merging_keeps_global_labels_when_k_does_not_divide_the_classes(digits_data):
    blocks = class_blocks(10, 3)  # 4 + 3 + 3 classes
    spec = _spec("small", 4, (1, 8, 8), 8)
    parts = []
    for lo, hi in blocks:
        sub = restrict(digits_data, lo, hi)
        assert sub.num_classes == hi - lo and int(sub.train_y.max()) == hi - lo - 1
        assert torch.equal(
            sub.train_x, digits_data.train_x[(digits_data.train_y >= lo) & (digits_data.train_y < hi)]
        )
        dec = Decoder(spec).state_dict()
        parts.append(
            LatentSet(
                spec,
                [
                    {
                        "offset": lo,
                        "num_classes": hi - lo,
                        "latents": torch.randn((hi - lo) * 2, 4, 2),
                        "decoder": dec,
                        "alpha": 0.01,
                    }
                ],
                lpc=2,
            )
        )
    merged = merge(parts, {})
    assert merged.num_classes == 10 and merged.num_priors == 20
    assert merged.hard_labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert merged.means().shape == (20, 1, 8, 8)


def test_storage_of_a_d3_set_matches_a_hand_count(tmp_path):
    spec = _spec("small", 4, (1, 8, 8), 8)
    dec = Decoder(spec)
    p = num_parameters(dec)
    # by hand: Linear 4 -> 32 (160), ConvT 8 -> 4 4x4 (516), BN 8, ConvT 4 -> 2 (130), BN 4, Conv 2 -> 1 (19)
    assert p == 160 + 516 + 8 + 130 + 4 + 19
    blocks = [
        {
            "offset": 0,
            "num_classes": 6,
            "latents": torch.randn(12, 4, 2),
            "decoder": dec.state_dict(),
            "alpha": 0.01,
        },
        {
            "offset": 6,
            "num_classes": 4,
            "latents": torch.randn(8, 4, 2),
            "decoder": dec.state_dict(),
            "alpha": 0.02,
        },
    ]
    art = LatentSet(
        spec, blocks, lpc=2, soft_labels=torch.softmax(torch.randn(20, 10), 1), meta={"num_classes": 10}
    )
    st = art.storage()
    floats = 2 * p + 20 * 4 * 2 + 20 * 10 + 2  # decoders, latents (mu, log var), soft labels, two alphas
    assert st["floats"] == floats
    assert st["bytes"] == {
        "images": 0,
        "labels": 800,
        "lr": 8,
        "decoders": 8 * p,
        "latents": 640,
        "total": 4 * floats,
    }
    assert st["ipc_equivalent"] == pytest.approx(floats / (10 * 64))
    art.save(tmp_path / "a")
    back = DistilledSet.load(tmp_path / "a")
    assert isinstance(back, LatentSet) and back.storage() == st
    assert torch.equal(back.means(), art.means()) and torch.equal(back.soft_labels, art.soft_labels)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["kind"] == "distributional" and manifest["decoder"]["size"] == "small"
    assert manifest["blocks"] == [{"offset": 0, "num_classes": 6}, {"offset": 6, "num_classes": 4}]


def test_d3_run_end_to_end_resumes_and_samples(tmp_path, capsys):
    out = tmp_path / "run"
    main(["run", "d3-digits", "--out", str(out), "--json", *TINY])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["kind"] == "distributional"
    assert report["storage"]["floats"] > 0 and report["storage"]["bytes"]["decoders"] > 0
    assert report["random_baseline_ipc"] == max(1, round(report["storage"]["ipc_equivalent"]))
    assert set(report["compute"]) >= {"experts_seconds", "distill_seconds", "label_expert_seconds"}
    assert 0 <= report["results"]["convnet"]["mean"] <= 1
    art = DistilledSet.load(out / "distilled")
    assert isinstance(art, LatentSet) and len(art.blocks) == 2 and art.soft_labels.shape == (10, 10)
    for k in range(2):
        assert (out / "subtasks" / str(k) / "checkpoints").is_dir()
        assert (out / "subtasks" / str(k) / "experts" / "manifest.json").exists()
    # the run report shows the decoded means, a few samples, and each sub-task's initial set
    page = (out / "report" / "index.html").read_text()
    for png in ("grid-distilled.png", "grid-samples.png", "grid-initial.png", "loss.png", "experts.png"):
        assert f'src="{png}"' in page and (out / "report" / png).exists(), png
    assert "decoded means" in page

    # killed after its first checkpoint (iteration 2): the same command ends with the same artifact
    again = tmp_path / "again"
    main(["run", "d3-digits", "--out", str(again), *TINY, "distill.iterations=2"])
    main(["run", "d3-digits", "--out", str(again), *TINY])
    capsys.readouterr()
    a, b = (
        load_file(str(out / "distilled" / "synthetic.safetensors")),
        load_file(str(again / "distilled" / "synthetic.safetensors")),
    )
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    main(["sample", str(out / "distilled"), "--n", "2", "--out", str(tmp_path / "s")])
    t = load_file(str(tmp_path / "s" / "samples.safetensors"))
    assert t["images"].shape == (30, 1, 8, 8) and t["soft_labels"].shape == (30, 10)
    assert len(list((tmp_path / "s" / "png").rglob("*.png"))) == 30


def test_d3_sub_tasks_run_in_parallel_on_ray_and_equal_the_local_run(tmp_path, capsys):
    pytest.importorskip("ray")
    local, ray = tmp_path / "local", tmp_path / "ray"
    extra = [*TINY, "eval.runs=1"]
    main(["run", "d3-digits", "--out", str(local), "--json", *extra, "executor.torch_threads=2"])
    main(
        [
            "run",
            "d3-digits",
            "--out",
            str(ray),
            "--json",
            *extra,
            "executor.kind=ray",
            "executor.cpus_per_task=1",
            "executor.torch_threads=2",
            "executor.local_cpus=2",
        ]
    )
    capsys.readouterr()
    a = load_file(str(local / "distilled" / "synthetic.safetensors"))
    b = load_file(str(ray / "distilled" / "synthetic.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sample_refuses_an_image_artifact(tmp_path, capsys):
    DistilledSet(images=torch.zeros(2, 1, 2, 2), labels=torch.tensor([0, 1]), lr=0.1).save(tmp_path / "img")
    with pytest.raises(SystemExit) as e:
        main(["sample", str(tmp_path / "img"), "--out", str(tmp_path / "s")])
    assert e.value.code == 2 and "nothing to sample" in capsys.readouterr().err


def test_d3_presets_resolve():
    for name in ("d3-digits", "d3-fashion-mnist"):
        cfg = load_config(name)
        assert cfg.distill.objective == "d3" and cfg.distill.dsa is False


# ALGORITHMS.md §6, the authors' ImageNet-1K settings:
# decoder, lpc, z, K, max_start, lr_latent, lr_lr, alpha0, lr_decode, iterations, batch_syn,
# mmd_samples, label epoch
AUTHORS = {
    "d3-imagenet64-1ipc": ("small", 1, 64, 5, 27, 3e-4, 1e-6, 0.01, 3e-4, 10000, 200, 30, 9),
    "d3-imagenet64-2ipc": ("medium", 2, 2048, 2, 10, 5e-3, 5e-6, 0.015, 8e-5, 10000, 250, 12, 12),
    "d3-imagenet64-10ipc": ("large", 10, 4096, 5, 27, 5e-3, 1e-6, 0.008, 8e-5, 8000, 250, 20, 13),
}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_imagenet_presets_hold_the_authors_settings(name):
    cfg = load_config(name)
    d, t = cfg.d3, cfg.distill
    got = (
        d.decoder,
        d.lpc,
        d.z_dim,
        d.subtasks,
        t.max_start_epoch,
        d.lr_latent,
        t.lr_lr,
        t.lr_init,
        d.lr_decode,
        t.iterations,
        t.batch_syn,
        d.mmd_samples,
        d.label_epoch,
    )
    assert got == AUTHORS[name]
    assert (t.syn_steps, t.expert_epochs, cfg.data.name, cfg.model.depth) == (10, 2, "imagenet64", 4)
    assert cfg.experts.train_epochs >= t.max_start_epoch + t.expert_epochs
