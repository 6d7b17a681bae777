"""The authors' MTT and DATM settings as presets: each loads, names its dataset/IPC/method, and keeps the
values read from the sources (docs/presets.md), with a start-epoch window the experts can serve."""

import pytest

from distillset.config import list_presets, load_config
from distillset.objectives.trajectory import check_schedule

# name: (syn_steps, expert_epochs, min_start, max_start, lr_img, lr_lr, lr_init, batch_syn, zca), from
# DC-BENCH's list of the MTT authors' commands (justincui03/dc_benchmark, methods/tm/readme.md).
MTT = {
    ("cifar10", 1): (50, 2, 0, 2, 100, 1e-7, 0.01, None, True),
    ("cifar10", 10): (30, 2, 0, 20, 100, 1e-5, 0.001, None, True),
    ("cifar10", 50): (30, 2, 0, 40, 1000, 1e-5, 0.001, None, False),
    ("cifar100", 1): (20, 3, 0, 20, 1000, 1e-5, 0.01, None, True),
    ("cifar100", 10): (20, 2, 0, 20, 1000, 1e-5, 0.01, None, False),
    ("cifar100", 50): (80, 2, 0, 40, 1000, 1e-5, 0.01, 125, True),
    ("tinyimagenet", 1): (10, 2, 0, 10, 10000, 1e-4, 0.01, None, False),
    ("tinyimagenet", 10): (20, 2, 0, 40, 10000, 1e-4, 0.01, 200, False),
    ("tinyimagenet", 50): (20, 2, 0, 40, 10000, 1e-4, 0.01, 300, False),
}

# name: (syn_steps, expert_epochs, min_start, current_max (None: no window), max_start, expansion_end,
# lr_img, lr_lr, lr_y, batch_syn, threshold, init), from NUS-HPC-AI-Lab/DATM's
# configs/<dataset>/ConvIN/IPC*.yaml; batch_syn None where the authors' value covers the whole synthetic set.
DATM = {
    ("cifar10", 1): (80, 2, 0, None, 4, None, 100, 1e-7, 5, None, 1.1, "correct"),
    ("cifar10", 10): (80, 2, 0, 10, 20, 1000, 100, 1e-5, 2, None, 1.0, "correct"),
    ("cifar10", 50): (80, 2, 0, 20, 40, 2000, 1000, 1e-5, 2, None, 1.0, "correct"),
    ("cifar10", 500): (40, 2, 40, None, 60, None, 50, 1e-5, 10, 1000, 1.0, "correct"),
    ("cifar10", 1000): (100, 2, 40, None, 60, None, 50, 1e-5, 10, 1000, 1.0, "correct"),
    ("cifar100", 1): (40, 3, 0, 20, 30, 1000, 1000, 1e-5, 10, None, 1.0, "correct"),
    ("cifar100", 10): (80, 2, 0, 30, 50, 2000, 1000, 1e-5, 10, None, 1.0, "correct"),
    ("cifar100", 50): (80, 2, 20, None, 70, None, 1000, 1e-5, 10, 1000, 1.0, "real"),
    ("cifar100", 100): (80, 2, 30, None, 70, None, 50, 1e-5, 10, 1000, 1.0, "correct"),
    ("tinyimagenet", 1): (40, 2, 0, 15, 20, 2000, 10000, 1e-4, 10, None, 1.0, "correct"),
    ("tinyimagenet", 10): (40, 2, 10, None, 50, None, 100, 1e-4, 10, 500, 1.0, "correct"),
    ("tinyimagenet", 50): (20, 2, 40, None, 70, None, 100, 1e-4, 10, 1000, 1.0, "correct"),
}

# PAD's table (ANCHORS.md) repeats DATM's settings and adds the depth ratio of the parameter filter.
PAD_DEPTH_RATIO = {
    ("cifar10", 1): 0.0,
    ("cifar10", 10): 0.5,
    ("cifar10", 50): 0.25,
    ("cifar10", 500): 0.5,
    ("cifar10", 1000): 0.5,
    ("cifar100", 1): 0.5,
    ("cifar100", 10): 0.5,
    ("cifar100", 50): 0.0,
    ("cifar100", 100): 0.5,
    ("tinyimagenet", 1): 0.5,
    ("tinyimagenet", 10): 0.5,
    ("tinyimagenet", 50): 0.5,
}

# name: (syn_steps, expert_epochs, max_start, lr_img, lr_lr, batch_syn, zca), from the AST authors' README.md
# and distill.sh (shenjiyuan123/AST-Alignment-with-Smooth-Expert); CIFAR-10 IPC 1 and 50 are not among
# their commands and take MTT's settings.
AST = {
    ("cifar10", 1): (50, 2, 2, 100, 1e-7, None, True),
    ("cifar10", 10): (30, 2, 20, 100, 1e-6, None, True),
    ("cifar10", 50): (30, 2, 40, 1000, 1e-5, None, False),
    ("cifar100", 1): (20, 3, 20, 1000, 1e-5, None, True),
    ("cifar100", 10): (20, 2, 30, 1000, 1e-5, 128, False),
    ("cifar100", 50): (80, 2, 40, 1000, 1e-5, 700, False),
    ("tinyimagenet", 1): (10, 2, 10, 10000, 1e-4, None, False),
}

NAMES = (
    [f"mtt-{d}-ipc{i}" for d, i in MTT]
    + [f"datm-{d}-ipc{i}" for d, i in DATM]
    + [f"pad-{d}-ipc{i}" for d, i in PAD_DEPTH_RATIO]
    + [f"ast-{d}-ipc{i}" for d, i in AST]
)


def _split(name: str) -> tuple[str, str, int]:
    method, dataset, ipc = name.split("-")
    return method, dataset, int(ipc.removeprefix("ipc"))


@pytest.mark.parametrize("name", NAMES)
def test_preset_loads_and_names_itself(name):
    method, dataset, ipc = _split(name)
    cfg = load_config(name)
    assert (cfg.method, cfg.data.name, cfg.data.ipc) == (method, dataset, ipc)
    assert list_presets()[name].startswith(f"{method.upper()} on ")
    d = cfg.distill
    assert d.min_start_epoch < d.max_start_epoch
    assert d.max_start_epoch + d.expert_epochs <= cfg.experts.train_epochs
    if d.sequential_generation:
        assert d.min_start_epoch < d.current_max_start_epoch <= d.max_start_epoch
    check_schedule(d, cfg.experts.train_epochs)  # the run's own check, before any work
    assert cfg.model.depth == (4 if dataset == "tinyimagenet" else 3)
    assert (cfg.eval.runs, cfg.eval.epochs, cfg.device) == (5, 1000, "auto")


@pytest.mark.parametrize(("dataset", "ipc"), list(MTT))
def test_mtt_presets_keep_the_authors_values(dataset, ipc):
    cfg = load_config(f"mtt-{dataset}-ipc{ipc}")
    d, e = cfg.distill, cfg.experts
    n, m, lo, hi, lr_img, lr_lr, lr_init, batch_syn, zca = MTT[dataset, ipc]
    assert (d.syn_steps, d.expert_epochs, d.min_start_epoch, d.max_start_epoch) == (n, m, lo, hi)
    assert (d.lr_img, d.lr_lr, d.lr_init, d.batch_syn) == pytest.approx((lr_img, lr_lr, lr_init, batch_syn))
    assert cfg.data.zca is zca
    assert (d.iterations, d.init, d.soft_label, d.threshold) == (5000, "real", False, None)
    assert not d.sequential_generation
    assert (e.num_experts, e.train_epochs, e.lr_teacher, e.batch_train) == (100, 50, 0.01, 256)
    assert e.momentum == e.weight_decay == 0.0
    assert cfg.eval.batch == 256


@pytest.mark.parametrize(("dataset", "ipc"), list(DATM))
def test_datm_presets_keep_the_authors_values(dataset, ipc):
    cfg = load_config(f"datm-{dataset}-ipc{ipc}")
    d, e = cfg.distill, cfg.experts
    n, m, lo, cur, hi, end, lr_img, lr_lr, lr_y, batch_syn, threshold, init = DATM[dataset, ipc]
    assert (d.syn_steps, d.expert_epochs, d.min_start_epoch, d.max_start_epoch) == (n, m, lo, hi)
    assert d.sequential_generation is (cur is not None)
    if cur is not None:
        assert (d.current_max_start_epoch, d.expansion_end_epoch) == (cur, end)
    assert (d.lr_img, d.lr_lr, d.lr_y, d.lr_init) == pytest.approx((lr_img, lr_lr, lr_y, 0.01))
    assert d.batch_syn == batch_syn
    assert (d.soft_label, d.threshold, d.init, d.momentum_y) == (True, pytest.approx(threshold), init, 0.9)
    assert (d.iterations, cfg.data.zca, cfg.eval.batch) == (10000, True, 128)
    assert (e.num_experts, e.train_epochs, e.lr_teacher, e.batch_train) == (100, 100, 0.01, 256)
    assert e.momentum == e.weight_decay == 0.0


def test_datm_gpu_presets_train_gsam_experts():
    for name in [
        n for n in list_presets() if n.startswith("datm-") and "digits" not in n and "mnist" not in n
    ]:
        experts = load_config(name).experts
        assert (experts.optimizer, experts.rho, experts.gsam_alpha) == ("gsam", 0.01, 0.3), name


@pytest.mark.parametrize(("dataset", "ipc"), list(PAD_DEPTH_RATIO))
def test_pad_presets_are_datm_plus_the_two_filters(dataset, ipc):
    pad, datm = load_config(f"pad-{dataset}-ipc{ipc}"), load_config(f"datm-{dataset}-ipc{ipc}")
    assert pad.distill.model_dump(exclude={"depth_ratio"}) == datm.distill.model_dump(exclude={"depth_ratio"})
    assert (pad.distill.depth_ratio, pad.distill.mask) == (PAD_DEPTH_RATIO[dataset, ipc], "flat")
    e = pad.experts
    assert (e.curriculum, e.difficulty, e.optimizer) == (True, "el2n", "gsam")
    assert (e.init_ratio, e.add_end_epoch, e.rm_epoch_first, e.rm_epoch_second) == (0.75, 20, 40, 60)
    assert (e.rm_easy_ratio_first, e.rm_easy_ratio_second) == (0.1, 0.2)
    assert (e.num_experts, e.train_epochs) == (100, 100)
    assert pad.scores.model_dump() == load_config(None).scores.model_dump()  # DeepCore's recipe


@pytest.mark.parametrize("name", ["pad-digits", "pad-fashion-mnist"])
def test_cpu_pad_presets_scale_the_curriculum_to_their_experts(name):
    cfg = load_config(name)
    e = cfg.experts
    assert e.curriculum and 0 < cfg.distill.depth_ratio < 1
    # The authors' 20 / 40 / 60 of 100 epochs, in proportion.
    assert (e.add_end_epoch, e.rm_epoch_first, e.rm_epoch_second) == tuple(
        round(f * e.train_epochs) for f in (0.2, 0.4, 0.6)
    )
    check_schedule(cfg.distill, e.train_epochs)


def _assert_ast_parts(cfg):
    d, e = cfg.distill, cfg.experts
    assert (d.init, d.balance_loss, d.intermediate, d.intermediate_beta) == (
        "representative",
        True,
        True,
        "constant",
    )
    assert (d.perturb_alpha, d.inner_momentum) == (1.0, 0.9)
    assert (d.soft_label, d.threshold, d.sequential_generation) == (False, None, False)
    # the smooth experts: SGD lr 0.003, momentum 0.9, wd 1e-3, x0.6 at the half, clipping the first fifth
    assert (e.optimizer, e.lr_teacher, e.momentum, e.weight_decay) == ("sgd", 0.003, 0.9, 0.001)
    assert (e.lr_decay, e.lr_decay_at, e.clip_loss, e.clip_fraction) == (0.6, 0.5, True, 0.2)
    assert (e.grad_penalty, e.grad_penalty_norm, e.curriculum) == (2.0, "channel", False)
    check_schedule(d, e.train_epochs)


@pytest.mark.parametrize(("dataset", "ipc"), list(AST))
def test_ast_presets_keep_the_authors_values(dataset, ipc):
    cfg = load_config(f"ast-{dataset}-ipc{ipc}")
    d, e = cfg.distill, cfg.experts
    n, m, hi, lr_img, lr_lr, batch_syn, zca = AST[dataset, ipc]
    assert (d.syn_steps, d.expert_epochs, d.min_start_epoch, d.max_start_epoch) == (n, m, 0, hi)
    assert (d.lr_img, d.lr_lr, d.batch_syn) == pytest.approx((lr_img, lr_lr, batch_syn))
    assert cfg.data.zca is zca
    assert d.iterations == 5000
    assert (e.num_experts, e.train_epochs, e.batch_train) == (100, 50, 256)
    assert d.lr_init == 0.01  # the authors' --lr_teacher=0.01
    _assert_ast_parts(cfg)


@pytest.mark.parametrize("name", ["ast-digits", "ast-fashion-mnist"])
def test_cpu_ast_presets_are_mtt_plus_the_parts(name):
    cfg, mtt = load_config(name), load_config(name.replace("ast-", "mtt-"))
    assert (cfg.method, list_presets()[name].startswith("AST on ")) == ("ast", True)
    assert (cfg.model, cfg.data, cfg.eval) == (mtt.model, mtt.data, mtt.eval)
    assert cfg.experts.train_epochs == mtt.experts.train_epochs
    # the student's effective step lr / (1 - mu) starts at the experts' (0.003 / 0.1), lr_lr scaled alike
    assert (cfg.distill.lr_init, cfg.distill.lr_lr) == (cfg.experts.lr_teacher, 1e-6)
    _assert_ast_parts(cfg)
