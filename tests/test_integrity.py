"""Integrity: checksums written with every file a stage reads and verified on read, bad values refused at
the door with one line, and `distillset verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from distillset import integrity
from distillset.cli import main
from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.demo import QUICK
from distillset.errors import CorruptFileError, DataError, InvalidValuesError, StoreError
from distillset.experts import scores as scores_mod
from distillset.experts import train as train_mod
from distillset.experts.scores import KINDS, compute_scores
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import train_experts
from distillset.rundir import read_checkpoint, write_checkpoint
from distillset.synthetic import DistilledSet, LatentSet
from distillset.synthetic.decoders import Decoder, DecoderSpec
from tests.conftest import TINY, counting


def flip(path: Path, n: int = 1024) -> None:
    """Invert the last `n` bytes of a safetensors file's tensor data: the same size, a valid header."""
    b = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(b[:8], "little")
    assert len(b) - start >= n, "the file holds fewer tensor bytes than the flip"
    for i in range(len(b) - n, len(b)):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def cli(capsys, *args):
    """The command's exit status (0 when it returns) and its output."""
    try:
        main(list(args))
    except SystemExit as e:
        return e.code, capsys.readouterr()
    return 0, capsys.readouterr()


def error_line(err: str) -> str:
    """The one error line a refused command prints (progress lines may come before it)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1
    return lines[-1]


# -- the checksum --------------------------------------------------------------------------------


def test_checksum_covers_every_name_dtype_shape_and_byte():
    t = {"b": torch.arange(6, dtype=torch.float32), "a": torch.tensor(3, dtype=torch.int64)}
    base = integrity.checksum(t)
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert integrity.checksum(dict(reversed(t.items()))) == base  # name order, not insertion order
    flipped = t["b"].clone()
    flipped.view(torch.int32)[2] ^= 1  # one bit
    assert integrity.checksum({**t, "b": flipped}) != base
    assert integrity.checksum({"c": t["b"], "a": t["a"]}) != base  # a renamed tensor
    assert integrity.checksum({**t, "b": t["b"].view(torch.int32)}) != base  # same bytes, another dtype
    assert integrity.checksum({**t, "b": t["b"].reshape(2, 3)}) != base  # same bytes, another shape
    bf = torch.randn(3, 4).to(torch.bfloat16)
    assert integrity.row_checksum(bf[1]) != integrity.row_checksum(bf[2])


def test_nonfinite_counts_and_locates():
    x = torch.zeros(4, 3)
    assert integrity.nonfinite(x) is None and integrity.nonfinite(torch.tensor([1, 2])) is None
    x[2, 1], x[3, 0] = float("nan"), float("inf")
    assert integrity.nonfinite(x, "image") == "1 NaN and 1 Inf values (the first in image 2)"


# -- expert stores -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, digits_data):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("experts") / "experts"
    train_experts(load_config("random-digits", TINY), out, digits_data, progress=False)
    return out


@pytest.fixture
def store(store_dir, tmp_path):
    shutil.copytree(store_dir, tmp_path / "experts")
    return TrajectoryStore(tmp_path / "experts")


def test_a_kilobyte_flipped_in_a_shard_is_refused_naming_the_file(store):
    good = store.load(0)
    shard = store.shard_path(1)
    flip(shard)
    last = store.manifest["train_epochs"]
    with pytest.raises(CorruptFileError, match="checksum") as e:
        store.load(1)
    assert str(shard) in str(e.value) and "distillset experts" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CorruptFileError, match=f"snapshot {last} does not match"):
        store.snapshot(1, last)
    assert torch.equal(store.snapshot(1, 0), store.load(1, verify=False)[0])  # its first bytes are sound
    assert torch.equal(store.load(0), good)  # the other expert is untouched


def test_distillation_on_a_flipped_shard_stops_with_one_line(demo_runs, tmp_path, capsys):
    experts = tmp_path / "experts"
    shutil.copytree(demo_runs / "experts", experts)
    shard = experts / "shard-00000.safetensors"
    flip(shard)  # the last snapshot: the one DATM's initialisation reads first
    args = ["distill", "datm-digits", *QUICK, "distill.iterations=1", "--experts", str(experts)]
    code, out = cli(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2
    line = error_line(out.err)
    assert str(shard) in line and "checksum" in line
    assert not (tmp_path / "run" / "distilled").exists()


def test_deleting_a_corrupt_shard_and_training_again_retrains_that_expert_alone(
    store, digits_data, monkeypatch
):
    before = store.load(1).clone()  # safetensors maps the file: a tensor read from it sees the flip
    flip(store.shard_path(1))
    store.shard_path(1).unlink()
    calls = []
    monkeypatch.setattr(train_mod, "expert_task", counting(train_mod.expert_task, calls))
    again = train_experts(load_config("random-digits", TINY), store.root, digits_data, progress=False)
    assert len(calls) == 1 and torch.equal(again.load(1), before)


def _rewrite_shard(store: TrajectoryStore, i: int, traj: torch.Tensor) -> None:
    """Expert i's shard holding `traj`, with a valid checksum (bad values written, not bits flipped)."""
    integrity.save(store.shard_path(i), {"trajectory": traj.contiguous()}, rows="trajectory")


def test_a_trajectory_with_nan_is_refused_on_every_read(store):
    traj = store.load(0)
    traj[2, 5] = float("nan")
    _rewrite_shard(store, 0, traj)
    with pytest.raises(InvalidValuesError, match=r"1 NaN value \(the first in snapshot 2\)"):
        store.load(0)
    with pytest.raises(
        InvalidValuesError, match=r"snapshot 2 holds 1 NaN value \(the first in parameter 5\)"
    ):
        store.snapshot(0, 2)
    store.snapshot(0, 1)  # a sound snapshot of the same shard still reads


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t[:, :-1], r"shape \(4, \d+\), not 4 x \d+"),  # narrower than num_params
        (lambda t: t[:-1], r"shape \(3, \d+\), not 4 x \d+"),  # one snapshot short of train_epochs + 1
        (lambda t: t.to(torch.bfloat16), "is bfloat16, not float32"),
    ],
    ids=["width", "epochs", "dtype"],
)
def test_a_trajectory_that_is_not_the_manifests_is_refused(store, change, message):
    _rewrite_shard(store, 1, change(store.load(1)))
    with pytest.raises(InvalidValuesError, match=message):
        store.load(1)
    with pytest.raises(InvalidValuesError, match=message):
        store.snapshot(1, 0)


def test_a_shard_written_before_checksums_still_loads(store):
    traj = store.load(0)
    save_file({"trajectory": traj}, str(store.shard_path(0)))  # no metadata, as before
    assert torch.equal(store.load(0), traj) and torch.equal(store.snapshot(0, 3), traj[3])
    assert store.verify_expert(0) is False and store.verify_expert(1) is True


def test_a_corrupt_partial_checkpoint_is_dropped_with_a_warning(store):
    store.write_partial(1, {"snapshots": torch.randn(3, 300)}, {"epoch": 2, "history": {}})
    assert store.read_partial(1) is not None
    flip(store.partial_path(1))
    with pytest.warns(UserWarning, match="from its first epoch.*checksum"):
        assert store.read_partial(1) is None
    assert not store.partial_path(1).exists()


# -- score files ---------------------------------------------------------------------------------


def test_a_corrupt_score_file_is_recomputed_never_used(tmp_path, digits_data, monkeypatch):
    cfg = load_config("random-digits", [*TINY, "scores.num_models=2"])
    n = digits_data.train_y.numel()
    calls = []

    def fake(cfg, data, k):
        calls.append(k)
        return {kind: torch.full((n,), float(k + 1)) for kind in KINDS}

    monkeypatch.setattr(scores_mod, "score_one_model", fake)
    first = compute_scores(cfg, digits_data, tmp_path, progress=False)
    assert calls == [0, 1]
    flip(first.path)
    with pytest.warns(UserWarning, match=r"recomputing .* it is corrupt \(its tensors do not match"):
        again = compute_scores(cfg, digits_data, tmp_path, progress=False)
    assert calls == [0, 1, 0, 1]
    assert all(torch.equal(again.scores[k], first.scores[k]) for k in KINDS)
    compute_scores(cfg, digits_data, tmp_path, progress=False)  # the rewritten file is sound: reused
    assert calls == [0, 1, 0, 1]


# -- the distillation checkpoint -----------------------------------------------------------------


def test_a_corrupt_checkpoint_is_refused_and_an_old_one_resumes(tmp_path):
    path = tmp_path / "checkpoints" / "distill.safetensors"
    tensors = {"images": torch.randn(10, 1, 8, 8), "lr": torch.tensor(0.01)}
    write_checkpoint(path, tensors, {"next_it": 3})
    back, state = read_checkpoint(path)
    assert state == {"next_it": 3} and torch.equal(back["images"], tensors["images"])
    flip(path)
    with pytest.raises(CorruptFileError, match="delete it to start the distillation afresh") as e:
        read_checkpoint(path)
    assert str(e.value).startswith(f"{path}: corrupt")
    meta = {"format": "distillset.distill-checkpoint/1", "state": json.dumps({"next_it": 3})}
    save_file(tensors, str(path), metadata=meta)  # written before checksums
    assert read_checkpoint(path)[1] == {"next_it": 3}


def _edit_metadata(path: Path, **changes: str) -> None:
    """Rewrite a safetensors file with its tensors as they are and some header metadata changed."""
    with safe_open(str(path), framework="pt") as f:
        meta = {**(f.metadata() or {}), **changes}
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_an_edited_header_is_refused_and_an_old_one_without_its_checksum_is_read(tmp_path, store):
    path = tmp_path / "checkpoints" / "distill.safetensors"
    write_checkpoint(path, {"images": torch.randn(4, 1, 8, 8)}, {"next_it": 3})
    _edit_metadata(path, state=json.dumps({"next_it": 30}))  # the tensors' checksum still matches
    with pytest.raises(CorruptFileError, match="its header's metadata does not match"):
        read_checkpoint(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    del meta[integrity.METADATA_KEY]  # as written before the metadata had a checksum
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert read_checkpoint(path)[1] == {"next_it": 30}

    shard = store.shard_path(0)
    rows = json.loads(load_metadata(shard)[integrity.ROWS_KEY])
    _edit_metadata(shard, **{integrity.ROWS_KEY: json.dumps(rows[::-1])})
    with pytest.raises(CorruptFileError, match="its header's metadata does not match"):
        store.snapshot(0, 1)
    with pytest.raises(CorruptFileError, match="its header's metadata does not match"):
        store.load(0)


def load_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_resuming_a_run_from_a_corrupt_checkpoint_stops_with_one_line(demo_runs, tmp_path, capsys):
    shutil.copytree(demo_runs / "experts", tmp_path / "experts")
    shutil.copytree(demo_runs / "datm-ipc1", tmp_path / "datm-ipc1")
    ckpt = tmp_path / "datm-ipc1" / "checkpoints" / "distill.safetensors"
    flip(ckpt)
    args = ["distill", "datm-digits", *QUICK, "data.ipc=1", "--experts", str(tmp_path / "experts")]
    code, out = cli(capsys, *args, "--out", str(tmp_path / "datm-ipc1"))
    assert code == 2
    line = error_line(out.err)
    assert str(ckpt) in line and "delete it to start the distillation afresh" in line


# -- artifacts -----------------------------------------------------------------------------------


@pytest.fixture
def artifact(tmp_path, capsys):
    out = tmp_path / "art"
    main(["baseline", "random", "--ipc", "2", "--out", str(out), "random-digits", *TINY])
    capsys.readouterr()
    return out


def _rewrite(directory: Path, change_tensors=None, change_manifest=None) -> None:  # noqa: ANN001
    """Change an artifact's tensors or manifest and write them back soundly (a valid checksum)."""
    tpath, mpath = directory / "synthetic.safetensors", directory / "manifest.json"
    if change_tensors is not None:
        t = load_file(str(tpath))
        change_tensors(t)
        integrity.save(tpath, {k: v.contiguous() for k, v in t.items()})
    if change_manifest is not None:
        m = json.loads(mpath.read_text())
        change_manifest(m)
        mpath.write_text(json.dumps(m))


def test_a_corrupt_artifact_is_refused_by_load_and_evaluate(artifact, capsys):
    DistilledSet.load(artifact)
    flip(artifact / "synthetic.safetensors")
    with pytest.raises(CorruptFileError, match="checksum"):
        DistilledSet.load(artifact)
    code, out = cli(capsys, "evaluate", str(artifact))
    assert code == 2
    assert out.err.count("\n") == 1 and str(artifact / "synthetic.safetensors") in error_line(out.err)


def test_an_artifact_with_a_nan_image_exits_2_with_one_line(artifact, capsys):
    def nan(t):
        t["images"][3, 0, 2, 2] = float("nan")

    _rewrite(artifact, nan)
    code, out = cli(capsys, "evaluate", str(artifact), "--runs", "1", "eval.epochs=1")
    assert code == 2 and out.err.count("\n") == 1
    line = error_line(out.err)
    assert "images hold 1 NaN value (the first in image 3)" in line and "lr" not in line
    assert str(artifact / "synthetic.safetensors") in line


def _set(key, value):  # noqa: ANN001, ANN202
    def change(d):
        d[key] = value(d[key]) if callable(value) else value

    return change


@pytest.mark.parametrize(
    "tensors, manifest, message",
    [
        (
            _set("labels", lambda y: torch.where(y == 0, 10, y)),
            None,
            "labels range over 1..10 but there are 10",
        ),
        (_set("labels", lambda y: y - 1), None, r"labels range over -1..8"),
        (_set("images", lambda x: x.double()), None, "images are float64, not float32"),
        (_set("images", lambda x: x[:, 0]), None, r"images have shape \(20, 8, 8\), not N x N x N x N"),
        (_set("images", lambda x: x.clone().fill_(float("inf"))), None, "1280 Inf values"),
        (_set("lr", torch.tensor(0.0)), None, "the lr is 0, not a positive number"),
        (_set("lr", torch.tensor(-0.01)), None, "the lr is -0.01"),
        (_set("lr", torch.tensor(float("nan"))), None, "the lr is nan"),
        (_set("labels", lambda y: y[:-1]), None, r"labels have shape \(19,\), not 20"),
        (None, _set("ipc", 5), "it says ipc 5 but synthetic.safetensors holds 20 images of 10 classes"),
        (None, _set("num_images", 30), "it says num_images 30 but synthetic.safetensors holds 20 images"),
        (None, _set("image_shape", [1, 28, 28]), r"it says image_shape \[1, 28, 28\]"),
        (None, _set("num_classes", 5), "it names 10 classes but says num_classes 5"),
        (None, _set("label_kind", "soft"), "it says label_kind 'soft' but synthetic.safetensors holds hard"),
        (None, _set("lr", 0.5), "it says lr 0.5"),
    ],
    ids=lambda v: None,
)
def test_an_artifact_with_bad_values_or_a_disagreeing_manifest_is_refused(
    artifact, tensors, manifest, message
):
    _rewrite(artifact, tensors, manifest)
    with pytest.raises(InvalidValuesError, match=message) as e:
        DistilledSet.load(artifact)
    where = "manifest.json" if manifest is not None else "synthetic.safetensors"
    assert str(e.value).startswith(f"{artifact / where}: ") and "make the artifact again" in str(e.value)


def test_soft_label_logits_of_the_wrong_width_or_with_nan_are_refused(tmp_path):
    art = DistilledSet(torch.zeros(4, 1, 2, 2), 0.1, label_logits=torch.randn(4, 3), meta={"num_classes": 3})
    art.save(tmp_path / "a")
    DistilledSet.load(tmp_path / "a")
    _rewrite(tmp_path / "a", _set("label_logits", lambda y: y[:, :2]))
    with pytest.raises(InvalidValuesError, match=r"label_logits have shape \(4, 2\), not 4 x 3"):
        DistilledSet.load(tmp_path / "a")
    _rewrite(tmp_path / "a", _set("label_logits", torch.full((4, 3), float("nan"))))
    with pytest.raises(InvalidValuesError, match="label_logits hold 12 NaN values"):
        DistilledSet.load(tmp_path / "a")


def test_an_artifact_written_before_checksums_still_loads(artifact):
    t = load_file(str(artifact / "synthetic.safetensors"))
    save_file(t, str(artifact / "synthetic.safetensors"))  # no metadata, as before
    back = DistilledSet.load(artifact)
    assert torch.equal(back.images, t["images"])


# -- distributional artifacts and D3's sub-tasks -------------------------------------------------


def _latent_set(soft: bool = True) -> LatentSet:
    spec = DecoderSpec("small", 4, 1, 8, 8, 8, (0.0,), (1.0,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dec = Decoder(spec).state_dict()
        blocks = [
            {"offset": 0, "num_classes": 2, "latents": torch.randn(4, 4, 2), "decoder": dec, "alpha": 0.01},
            {"offset": 2, "num_classes": 1, "latents": torch.randn(2, 4, 2), "decoder": dec, "alpha": 0.02},
        ]
        labels = torch.softmax(torch.randn(6, 3), 1) if soft else None
    return LatentSet(spec, blocks, lpc=2, soft_labels=labels, meta={"num_classes": 3})


@pytest.mark.parametrize(
    "tensors, manifest, message",
    [
        (_set("block1.latents", lambda z: z.clone().fill_(float("nan"))), None, "block1.latents hold 16 NaN"),
        (
            _set("block0.latents", lambda z: z[:3]),
            None,
            r"block0.latents have shape \(3, 4, 2\), not 4 x 4 x 2",
        ),
        (_set("block0.decoder.out.weight", lambda w: w[:, :1]), None, "block0.decoder.out.weight has shape"),
        (_set("block0.alpha", torch.tensor(-5.0)), None, r"step size \(lr\) is -\d"),
        (_set("soft_labels", lambda p: -p), None, "negative probabilities"),
        (_set("soft_labels", lambda p: p[:, :2]), None, r"soft_labels have shape \(6, 2\), not 6 x 3"),
        (None, _set("num_priors", 7), "it says num_priors 7 but synthetic.safetensors holds 6 priors"),
        (None, _set("blocks", [{"offset": 0, "num_classes": 2}, {"offset": 3, "num_classes": 1}]), "block 1"),
        (None, _set("num_classes", 4), "it names 3 classes but says num_classes 4"),
    ],
    ids=lambda v: None,
)
def test_a_distributional_artifact_with_bad_values_is_refused(tmp_path, tensors, manifest, message):
    art = _latent_set()
    art.meta["class_names"] = ["a", "b", "c"]
    art.save(tmp_path / "d3")
    DistilledSet.load(tmp_path / "d3")
    _rewrite(tmp_path / "d3", tensors, manifest)
    with pytest.raises(InvalidValuesError, match=message):
        DistilledSet.load(tmp_path / "d3")


def test_hard_labels_of_a_distributional_artifact_must_be_its_blocks(tmp_path):
    _latent_set(soft=False).save(tmp_path / "d3")
    assert DistilledSet.load(tmp_path / "d3").label_kind == "hard"
    _rewrite(tmp_path / "d3", _set("labels", lambda y: y.flip(0)))
    with pytest.raises(InvalidValuesError, match="labels are not those of the blocks' priors"):
        DistilledSet.load(tmp_path / "d3")


D3_TINY = [
    "experts.num_experts=1",
    "experts.train_epochs=2",
    "distill.iterations=2",
    "distill.syn_steps=2",
    "distill.max_start_epoch=1",
    "distill.eval_every=2",
    "distill.eval_epochs=1",
    "distill.checkpoint_every=2",
    "d3.label_epoch=1",
    "d3.mmd_samples=2",
    "model.width=8",
    "eval.runs=1",
    "eval.epochs=1",
    "eval.baseline=false",
]


def test_a_corrupt_d3_sub_task_result_stops_the_run_and_verify_names_it(tmp_path, capsys):
    run = tmp_path / "d3"
    main(["run", "d3-digits", "--out", str(run), "--json", *D3_TINY])
    capsys.readouterr()
    code, out = cli(capsys, "verify", str(run))
    assert code == 0
    assert "subtasks/1/checkpoints/distill.safetensors: ok" in out.out
    ckpt = run / "subtasks" / "1" / "checkpoints" / "distill.safetensors"
    flip(ckpt, 256)
    code, out = cli(capsys, "run", "d3-digits", "--out", str(run), "--json", *D3_TINY)
    assert code == 2 and str(ckpt) in error_line(out.err)
    code, out = cli(capsys, "verify", str(run))
    assert code == 2 and f"{ckpt}: corrupt" in out.out
    assert "subtasks/0/checkpoints/distill.safetensors: ok" in out.out


# -- datasets ------------------------------------------------------------------------------------


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    names = np.array([str(c) for c in range(10)])
    np.savez(path, x_train=x, y_train=y, x_test=x[:40], y_test=y[:40], class_names=names)
    return path


@pytest.mark.parametrize(
    "poison, message",
    [
        (lambda x, y: x.__setitem__((5, 2, 2), np.nan), "holds floats outside"),
        (lambda x, y: y.__setitem__(7, 10), "range over 0..10 but npz has 10 classes"),
    ],
    ids=["nan", "label"],
)
def test_a_dataset_with_nan_or_labels_out_of_range_exits_2_with_one_line(tmp_path, capsys, poison, message):
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 8, 8), dtype=np.float32), np.arange(200) % 10
    poison(x, y)
    data = [f"data.root={_npz(tmp_path / 'd.npz', x, y)}", "data.name=npz"]
    args = ["baseline", "random", "--ipc", "1", "--out", str(tmp_path / "a"), "random-digits", *TINY, *data]
    code, out = cli(capsys, *args)
    assert code == 2 and out.err.count("\n") == 1 and message in error_line(out.err)


def test_a_dataset_built_by_hand_is_checked_at_the_door(digits_data):
    import dataclasses

    from distillset.data.base import Split

    ds = digits_data.dataset
    cfg = load_config("random-digits", TINY).data
    x = ds.train.x.clone()
    x[4, 0, 1, 1] = float("nan")
    bad = dataclasses.replace(ds, train=Split(x, ds.train.y))
    with pytest.raises(
        DataError, match=r"training images of digits hold 1 NaN value \(the first in image 4\)"
    ):
        prepare(cfg, torch.device("cpu"), dataset=bad)
    y = ds.test.y.clone()
    y[0] = -1
    with pytest.raises(DataError, match=r"test labels of digits range over -1\.\.9"):
        prepare(cfg, torch.device("cpu"), dataset=dataclasses.replace(ds, test=Split(ds.test.x, y)))
    prepare(cfg, torch.device("cpu"), dataset=ds)  # the sound one passes


# -- distillset verify ---------------------------------------------------------------------------


def test_verify_a_good_run_exits_0_and_a_corrupted_one_2_naming_the_file(demo_runs, tmp_path, capsys):
    run = tmp_path / "demo"
    shutil.copytree(demo_runs, run)
    code, out = cli(capsys, "verify", str(run))
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    files = sorted(p for p in run.rglob("*.safetensors") if "report" not in p.parts)
    assert len(files) == 10 and sorted(Path(line.rsplit(": ", 1)[0]) for line in lines[:-1]) == files
    assert all(line.endswith(": ok") for line in lines[:-1])
    assert lines[-1] == "10 files checked: 10 ok, 0 bad"

    flip(run / "datm-ipc10" / "distilled" / "synthetic.safetensors", 64)
    flip(run / "experts" / "shard-00001.safetensors", 64)
    code, out = cli(capsys, "verify", str(run))
    assert code == 2
    bad = [line for line in out.out.splitlines() if not line.endswith(": ok")]
    assert bad[0].startswith(f"{run / 'datm-ipc10' / 'distilled' / 'synthetic.safetensors'}: corrupt")
    assert bad[1].startswith(f"{run / 'experts' / 'shard-00001.safetensors'}: corrupt")
    assert bad[2] == "10 files checked: 8 ok, 2 bad"
    first = run / "datm-ipc10" / "distilled" / "synthetic.safetensors"
    assert error_line(out.err) == f"error: 2 bad files under {run}, the first {first}."
    code, out = cli(capsys, "verify", str(run / "experts"))  # a store alone
    assert code == 2 and out.out.splitlines()[-1] == "2 files checked: 1 ok, 1 bad"
    code, out = cli(capsys, "verify", str(run / "datm-ipc1" / "distilled"))  # an artifact alone
    assert code == 0 and out.out.splitlines()[-1] == "1 file checked: 1 ok, 0 bad"


def test_verify_reports_old_files_and_bad_values(store, artifact, tmp_path, capsys):
    t = load_file(str(store.shard_path(0)))
    save_file(t, str(store.shard_path(0)))  # written before checksums
    code, out = cli(capsys, "verify", str(store.root))
    assert code == 0
    assert f"{store.shard_path(0)}: no checksum (written by an older version)" in out.out
    assert "2 files checked: 1 ok, 1 without a checksum (written by an older version), 0 bad" in out.out

    _rewrite(artifact, change_manifest=_set("ipc", 3))
    code, out = cli(capsys, "verify", str(artifact))
    assert code == 2 and f"{artifact / 'manifest.json'}: it says ipc 3" in out.out

    store.shard_path(1).unlink()
    code, out = cli(capsys, "verify", str(store.root))
    assert code == 2 and f"{store.shard_path(1)}: missing (the manifest records it); run the same" in out.out

    code, out = cli(capsys, "verify", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in error_line(out.err)
    (tmp_path / "empty").mkdir()
    code, out = cli(capsys, "verify", str(tmp_path / "empty"))
    assert code == 2 and "nothing to verify" in error_line(out.err)


def _not_utf8(path: Path) -> None:
    """Replace a JSON file's text with bytes that are not UTF-8 (a half-copied or mis-encoded file)."""
    path.write_bytes(b'{"format": "\xff\xfe\xfa"}')


def test_a_manifest_that_is_not_utf8_is_refused_with_one_line(store, artifact, demo_runs, tmp_path, capsys):
    _not_utf8(artifact / "manifest.json")
    with pytest.raises(CorruptFileError, match="not UTF-8 text"):
        DistilledSet.load(artifact)
    code, out = cli(capsys, "evaluate", str(artifact))
    assert code == 2 and str(artifact / "manifest.json") in error_line(out.err)
    code, out = cli(capsys, "verify", str(artifact))
    assert code == 2 and str(artifact / "manifest.json") in error_line(out.err)

    _not_utf8(store.manifest_path)
    with pytest.raises(StoreError, match="not UTF-8 text"):
        TrajectoryStore(store.root)
    code, out = cli(capsys, "verify", str(store.root))
    assert code == 2 and str(store.manifest_path) in error_line(out.err)

    run = tmp_path / "run"
    shutil.copytree(demo_runs / "datm-ipc1", run)
    (run / "evaluation.json").write_bytes(b"\x80{}")
    code, out = cli(capsys, "compare", str(run), str(run), "--out", str(tmp_path / "cmp"))
    assert code == 2 and "evaluation.json is unreadable (not UTF-8 text" in error_line(out.err)
    code, out = cli(capsys, "report", str(run))
    assert code == 0, out.err  # the report shows what it can and says what it could not read
    assert "not UTF-8 text" in (run / "report" / "index.html").read_text()
