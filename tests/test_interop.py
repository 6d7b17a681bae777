"""Other tools' files in and out: the authors' .pt layouts (MTT, DATM/PAD, DD-Ranking) and the exports."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from distillset.cli import main
from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.data.sources import _load_npz, load_dataset
from distillset.errors import DataError, StoreError
from distillset.interop import export_artifact, find_authors_files, import_authors
from distillset.synthetic import DistilledSet, LatentSet
from distillset.synthetic.decoders import Decoder, DecoderSpec
from distillset.synthetic.viewing import viewer_for

OVERRIDES = ["device=cpu", "model.width=8"]
C, N = 10, 20  # digits: 10 classes; 2 images per class


@pytest.fixture(scope="module")
def cfg():
    return load_config("datm-digits", OVERRIDES)


@pytest.fixture(scope="module")
def data(cfg):
    return prepare(cfg.data, torch.device("cpu"))


@pytest.fixture
def cached_prepare(monkeypatch, data):
    """The CLI's `prepare` returns the module's prepared digits (the commands import it when called)."""
    monkeypatch.setattr("distillset.data.prepared.prepare", lambda cfg, device: data)


def _images(n: int = N, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _class_major(n: int = N) -> torch.Tensor:
    return torch.arange(C).repeat_interleave(n // C)


def _write(folder, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        torch.save(obj, folder / name)


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr()


# ---------------------------------------------------------------- import


def test_datm_layout_with_label_logits_round_trips(tmp_path, cfg, data):
    x, logits = _images(), torch.randn(N, C)
    syn_lr = torch.tensor(0.02, requires_grad=True)  # DATM saves the learned lr as a 0-d tensor
    _write(
        tmp_path / "run" / "Normal",
        {"images_best.pt": x, "labels_best.pt": logits, "lr_best.pt": syn_lr.detach().cpu()},
    )
    art = import_authors(tmp_path / "run", cfg, data, method="datm")  # the parent of Normal/
    assert art.kind == "images" and art.label_kind == "soft" and art.labels is None
    assert torch.equal(art.images, x) and torch.equal(art.label_logits, logits)
    assert art.lr == pytest.approx(0.02)
    imp = art.meta["imported"]
    assert imp["format"] == "datm" and imp["lr_source"] == "file" and imp["space"] == "network"
    assert imp["files"]["labels"].endswith("Normal/labels_best.pt")
    assert art.meta["ipc"] == 2 and art.meta["method"] == "datm"
    assert art.meta["preprocessing"] == data.prep.to_manifest()

    back = DistilledSet.load(art.save(tmp_path / "art"))
    assert torch.equal(back.images, x) and torch.equal(back.label_logits, logits)
    assert back.meta["imported"] == imp and back.lr == pytest.approx(0.02)


@pytest.mark.parametrize("lr_name", ["lr_best.pt", "syn_lr_best.pt"])
def test_mtt_layout_with_int_labels_and_a_python_float_lr(tmp_path, cfg, data, lr_name):
    x, y = _images(seed=1), _class_major().flip(0)
    _write(tmp_path, {"images_best.pt": x, "labels_best.pt": y, lr_name: 0.03})  # torch.save(syn_lr.item())
    art = import_authors(tmp_path, cfg, data)
    assert art.label_kind == "hard" and torch.equal(art.labels, y) and art.labels.dtype == torch.int64
    assert torch.equal(art.images, x) and art.lr == 0.03
    assert art.meta["imported"]["format"] == "mtt" and art.meta["method"] == "imported"
    back = DistilledSet.load(art.save(tmp_path / "art"))
    assert torch.equal(back.labels, y) and torch.equal(back.images, x)


def test_an_iteration_is_chosen_by_which_or_by_the_file_name(tmp_path, cfg, data):
    x1, x2 = _images(seed=1), _images(seed=2)
    _write(
        tmp_path,
        {
            "images_best.pt": x1,
            "labels_best.pt": _class_major(),
            "images_500.pt": x2,
            "labels_500.pt": _class_major(),
        },
    )
    by_which = import_authors(tmp_path, cfg, data, which="500")
    by_file = import_authors(tmp_path / "images_500.pt", cfg, data)
    assert torch.equal(by_which.images, x2) and torch.equal(by_file.images, x2)
    assert by_which.lr == cfg.eval.default_lr and by_which.meta["imported"]["lr_source"] == "default"
    with pytest.raises(DataError, match="images_7.pt"):
        find_authors_files(tmp_path, "7")


def test_pixel_space_applies_the_configs_preprocessing(tmp_path, cfg, data):
    pixels = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    _write(tmp_path, {"images.pt": pixels, "labels.pt": _class_major()})
    art = import_authors(tmp_path, cfg, data, space="pixel")
    assert torch.allclose(art.images, data.prep.apply(pixels))
    with pytest.raises(DataError, match="--space network"):
        _write(tmp_path / "net", {"images.pt": _images() * 5, "labels.pt": _class_major()})
        import_authors(tmp_path / "net", cfg, data, space="pixel")


def test_ddranking_folder_through_the_cli_then_evaluate(tmp_path, capsys, data):
    x = data.train_x[:N].clone()  # real images: a cheap evaluation still learns something
    _write(tmp_path / "dd", {"images.pt": x, "lr.pt": torch.tensor(0.01)})  # no labels: class-major
    main(["import", str(tmp_path / "dd"), "--out", str(tmp_path / "art"), "datm-digits", *OVERRIDES])
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "20 images (IPC 2, hard labels, lr 0.01 from lr.pt)" in line
    art = DistilledSet.load(tmp_path / "art")
    assert torch.equal(art.images, x) and torch.equal(art.labels, _class_major())
    assert art.meta["imported"]["format"] == "ddranking"

    main(["evaluate", str(tmp_path / "art"), "--json", "eval.runs=1", "eval.epochs=2", "eval.baseline=false"])
    report = json.loads(capsys.readouterr().out)
    assert report["ipc"] == 2 and 0.0 <= report["results"]["convnet"]["mean"] <= 1.0


class _Payload:
    """A pickle whose loading would create `marker` (what an unsafe torch.load would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_object_is_refused_and_never_runs(tmp_path, capsys, cached_prepare):
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))  # the payload is real: plain unpickling runs it
    assert live.exists()
    marker = tmp_path / "ran"
    _write(tmp_path / "bad", {"images_best.pt": _Payload(marker), "labels_best.pt": _class_major()})
    code, out = run(capsys, "import", str(tmp_path / "bad"), "--out", str(tmp_path / "art"), "datm-digits")
    assert code == 2 and "holds no plain tensor" in out.err and out.err.strip().count("\n") == 0
    assert not marker.exists() and not (tmp_path / "art").exists()


def test_a_dict_of_tensors_is_refused(tmp_path, capsys, cached_prepare):
    _write(tmp_path / "d", {"images_best.pt": {"images": _images()}})
    code, out = run(capsys, "import", str(tmp_path / "d"), "--out", str(tmp_path / "art"), "datm-digits")
    assert code == 2 and "holds a dict, not a plain tensor" in out.err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"images_best.pt": _images(shape=(3, 8, 8))}, "shape"),
        ({"images_best.pt": _images(), "labels_best.pt": _class_major()[:-1]}, "19 labels for the 20 images"),
        ({"images_best.pt": _images(), "labels_best.pt": _class_major() + 1}, "class labels 1..10"),
        ({"images_best.pt": _images(), "labels_best.pt": torch.randn(N, C - 1)}, "N x 10 label logits"),
        ({"images_best.pt": _images(15)}, "not a multiple of the 10 classes"),
        ({"images_best.pt": _images().index_fill(0, torch.tensor([3]), float("nan"))}, "non-finite"),
        ({"images_best.pt": _images(), "lr_best.pt": torch.tensor([0.1, 0.2])}, "not one float lr"),
        ({"labels_best.pt": _class_major()}, "holds no images_best.pt or images.pt"),
    ],
)
def test_mismatched_files_are_refused_with_exit_2(tmp_path, capsys, cached_prepare, files, message):
    _write(tmp_path / "run", files)
    code, out = run(capsys, "import", str(tmp_path / "run"), "--out", str(tmp_path / "art"), "datm-digits")
    assert code == 2 and message in out.err and out.err.strip().count("\n") == 0
    assert not (tmp_path / "art").exists()


# ---------------------------------------------------------------- export


@pytest.fixture(scope="module")
def hard_art(cfg, data):
    from distillset.baseline import artifact_meta

    meta = artifact_meta(cfg, data, "test") | {"ipc": 2}
    return DistilledSet(images=_images(seed=5), labels=_class_major(), lr=0.015, meta=meta)


@pytest.fixture(scope="module")
def soft_art(hard_art):
    logits = torch.randn(N, C, generator=torch.Generator().manual_seed(6))
    return DistilledSet(images=hard_art.images, label_logits=logits, lr=0.02, meta=hard_art.meta)


def test_npz_export_reads_back_through_the_npz_loader(tmp_path, soft_art):
    (path,) = export_artifact(soft_art, tmp_path / "npz", "npz")
    assert path == tmp_path / "npz" / "distilled.npz"
    src = _load_npz(path)  # the loader `data.name=npz data.root=...` uses
    pixels = viewer_for(soft_art.meta).pixels(soft_art.images)
    assert torch.equal(src.train_x, pixels) and torch.equal(src.train_y, soft_art.hard_labels)
    assert src.test_x is None and src.class_names == soft_art.meta["class_names"]  # no test split
    # and as a dataset by name: the training images are the set's pixels, a seeded hold-out the test
    ds = load_dataset("npz", path, val_size=0, test_size=0.2)
    seen = torch.cat([ds.train.x, ds.test.x])
    assert seen.shape[0] == N and len(ds.test.y) == round(0.2 * N)
    want = sorted(map(tuple, (pixels.float() / 255).flatten(1).tolist()))
    assert sorted(map(tuple, seen.flatten(1).tolist())) == want
    with np.load(path, allow_pickle=False) as z:
        assert np.array_equal(z["images"], soft_art.images.numpy())
        assert np.array_equal(z["label_logits"], soft_art.label_logits.numpy())
        assert z["lr"].shape == () and float(z["lr"]) == pytest.approx(0.02)


def test_imagefolder_export_reads_back_through_the_folder_loader(tmp_path, hard_art):
    paths = export_artifact(hard_art, tmp_path / "png", "imagefolder")
    out = tmp_path / "png"
    folders = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert folders == [f"{k:03d}-{k}" for k in range(C)]
    assert all(len(list((out / f).glob("*.png"))) == 2 for f in folders) and len(paths) == N + 1
    pixels = viewer_for(hard_art.meta).pixels(hard_art.images)
    with Image.open(out / "003-3" / "00007.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), pixels[7, 0].numpy())
    index = json.loads((out / "labels.json").read_text())
    assert index["files"][7] == {"file": "003-3/00007.png", "label": 3, "kind": "image"}

    ds = load_dataset("imagefolder", out, val_size=0, test_size=0)
    assert torch.equal((ds.train.x * 255).round().to(torch.uint8), pixels)
    assert torch.equal(ds.train.y, hard_art.labels)


def test_ddranking_export_loads_safely_and_imports_back(tmp_path, cfg, data, soft_art):
    paths = export_artifact(soft_art, tmp_path / "dd", "ddranking")
    assert [p.name for p in paths] == ["images.pt", "labels.pt", "lr.pt", "README.txt"]
    load = {p.stem: torch.load(p, weights_only=True, map_location="cpu") for p in paths[:3]}
    assert torch.equal(load["images"], soft_art.images) and torch.equal(load["labels"], soft_art.label_logits)
    assert load["lr"].shape == () and float(load["lr"]) == pytest.approx(0.02)
    assert "mean/std normalisation" in (tmp_path / "dd" / "README.txt").read_text()

    back = import_authors(tmp_path / "dd", cfg, data)
    assert torch.equal(back.images, soft_art.images) and torch.equal(back.label_logits, soft_art.label_logits)
    assert back.lr == float(load["lr"]) and back.meta["imported"]["format"] == "ddranking"


def test_export_refuses_a_folder_that_holds_files(tmp_path, capsys, hard_art):
    art = hard_art.save(tmp_path / "art")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="already holds files"):
        export_artifact(hard_art, tmp_path / "busy", "npz")
    code, out = run(capsys, "export", str(art), "--format", "npz", "--out", str(tmp_path / "busy"))
    assert code == 2 and out.err.strip().count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "busy"]  # no temporary folder left behind

    (tmp_path / "empty").mkdir()
    main(["export", str(art), "--format", "ddranking", "--out", str(tmp_path / "empty")])
    assert "20 images exported as ddranking (4 files)" in capsys.readouterr().out


def test_a_distributional_artifact_exports_means_and_samples(tmp_path, data):
    spec = DecoderSpec("small", 4, 1, 8, 8, 8, (-1.0,), (2.0,))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dec = Decoder(spec).state_dict()
        latents = torch.randn(C, 4, 2)
    block = {"offset": 0, "num_classes": C, "latents": latents, "decoder": dec, "alpha": 0.01}
    probs = torch.softmax(torch.randn(C, C, generator=torch.Generator().manual_seed(7)), 1)
    meta = {"num_classes": C, "class_names": [str(k) for k in range(C)], "ipc": 1}
    art = LatentSet(
        spec, [block], lpc=1, soft_labels=probs, meta=meta | {"preprocessing": data.prep.to_manifest()}
    )

    (path,) = export_artifact(art, tmp_path / "npz", "npz", samples=2)
    with np.load(path, allow_pickle=False) as z:
        images, y, logits = torch.from_numpy(z["images"]), torch.from_numpy(z["y_train"]), z["label_logits"]
    assert images.shape == (3 * C, 1, 8, 8) and torch.allclose(images[:C], art.means())
    assert not torch.allclose(images[C : 2 * C], images[:C])  # fresh samples, not the means again
    assert torch.equal(y, torch.arange(C).repeat(3))
    assert np.allclose(logits, np.tile(np.log(probs.numpy()), (3, 1)))  # the priors', as log-probabilities
    again = export_artifact(art, tmp_path / "npz2", "npz", samples=2)[0]
    with np.load(again, allow_pickle=False) as z:
        assert np.array_equal(z["images"], images.numpy())  # seed 0: the same samples every export
    paths = export_artifact(art, tmp_path / "png", "imagefolder", samples=1)
    kinds = [f["kind"] for f in json.loads(paths[-1].read_text())["files"]]
    assert kinds == ["mean"] * C + ["sample"] * C
