"""Fuzzing the files distillset writes and reads back: manifests (an artifact's, a trajectory store's) and
safetensors headers (artifacts of both kinds, expert shards, the distillation checkpoint).

A sound file is written once per target; each case copies it, damages it (a manifest field set to any
JSON value or removed, the manifest's bytes replaced; a header's tensor entry given another dtype, shape or
offsets, removed or added; a metadata entry changed; the header's length, bytes or end cut) and then
uses it the way the command line does. Each case must either work and give sane tensors, or stop with a
DistillsetError of one line (exit 2 at the command line, which `distillset verify` shows for each case).
Some cases also drop the checksums first, as an older file or a deliberate edit would, so that the
checks behind them are reached too. Derandomized, as in test_fuzz.py.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from distillset import integrity
from distillset.cli import main
from distillset.config import load_config
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import train_experts
from distillset.rundir import read_checkpoint, write_checkpoint
from distillset.synthetic import DistilledSet, LatentSet
from distillset.synthetic.decoders import Decoder, DecoderSpec
from tests.conftest import TINY
from tests.test_fuzz import check_one_line, cli, fresh_dir, fuzz, refused

# -- safetensors files as (header, data) ---------------------------------------------------------


def split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**40, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3", ""]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
shapes = st.one_of(
    st.lists(st.integers(-2, 12), max_size=5), st.lists(st.sampled_from([0, 2**20, 2**40]), max_size=4)
)


@st.composite
def header_damage(draw):
    """A function that damages a safetensors file's bytes, and its description (for the report)."""
    kind = draw(
        st.sampled_from(
            [
                "field",
                "shape",
                "drop",
                "add",
                "rename",
                "metadata",
                "no-metadata",
                "length",
                "cut",
                "flip",
                "text",
            ]
        )
    )
    strip = draw(st.booleans())  # drop the checksums first, so that what they guard is reached too
    pick, value = draw(st.integers(0, 20)), draw(json_value)
    key_text, shape, pos = draw(st.text(max_size=10)), draw(shapes), draw(st.integers(0, 2**16))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))

    def damage(blob: bytes) -> bytes:
        header, data = split(blob)
        meta = header.pop("__metadata__", {})
        if strip:
            for k in (integrity.CHECKSUM_KEY, integrity.METADATA_KEY, integrity.ROWS_KEY):
                meta.pop(k, None)
        names = sorted(header)
        name = names[pick % len(names)] if names else "x"
        if kind == "field":
            header[name][field] = value
        elif kind == "shape":
            header[name]["shape"] = shape
        elif kind == "drop":
            header.pop(name, None)
        elif kind == "add":
            header[key_text or "extra"] = {
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [0, 4 * max(1, len(shape))],
            }
        elif kind == "rename" and name in header:
            header[key_text or "renamed"] = header.pop(name)
        elif kind == "metadata":
            keys = sorted(meta)
            meta[keys[pick % len(keys)] if keys and pick % 2 else key_text] = (
                value if pick % 3 == 0 else json.dumps(value) if pick % 3 == 1 else str(value)
            )
        if kind != "no-metadata" and meta:
            header["__metadata__"] = meta
        out = join(header, data)
        if kind == "length":
            out = struct.pack("<Q", pos * (2**pick)) + out[8:]
        elif kind == "cut":
            out = out[: pos % max(1, len(out))]
        elif kind == "flip" and out:
            i = pos % len(out)
            out = out[:i] + bytes([out[i] ^ (1 + pick)]) + out[i + 1 :]
        elif kind == "text":
            out = out[:8] + json.dumps(value).encode() + out[8:][: pos % 64]
        return out

    return damage, (kind, strip)


@st.composite
def manifest_damage(draw, nested: tuple[str, ...] = ()):
    """A function that damages a manifest.json's bytes."""
    kind = draw(st.sampled_from(["set", "set", "drop", "nested", "bytes", "cut"]))
    pick, value = draw(st.integers(0, 30)), draw(json_value)
    raw = draw(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"", b"\xff\xfe", b"{", b"[]", b"null", b'{"format": 1}']),
        )
    )

    def damage(blob: bytes) -> bytes:
        if kind == "bytes":
            return raw
        if kind == "cut":
            return blob[: pick * len(blob) // 31]
        m = json.loads(blob)
        keys = sorted(m)
        key = keys[pick % len(keys)]
        if kind == "set":
            m[key] = value
        elif kind == "drop":
            del m[key]
        else:
            inside = [k for k in nested if isinstance(m.get(k), dict) and m[k]] or [key]
            top = inside[pick % len(inside)]
            if isinstance(m.get(top), dict) and m[top]:
                sub = sorted(m[top])
                m[top][sub[pick % len(sub)]] = value
            else:
                m[top] = value
        return json.dumps(m).encode()

    return damage, kind


def damaged_copy(sound: Path, base: Path, file: str, damage) -> Path:  # noqa: ANN001
    """A copy of the directory `sound` with `file` in it damaged."""
    out = fresh_dir(base) / sound.name
    shutil.copytree(sound, out)
    path = out / file
    path.write_bytes(damage(path.read_bytes()))
    return out


# -- artifacts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A hard-label image artifact (`distillset baseline`), the same with soft labels, and a
    distributional one."""
    base = tmp_path_factory.mktemp("sound")
    main(["baseline", "random", "--ipc", "2", "--out", str(base / "hard"), "random-digits", *TINY])
    hard = DistilledSet.load(base / "hard")
    soft = DistilledSet(hard.images, hard.lr, label_logits=torch.randn(len(hard.images), 10), meta=hard.meta)
    soft.save(base / "soft")
    spec = DecoderSpec("small", 4, 1, 8, 8, 8, (0.0,), (1.0,))
    torch.manual_seed(0)
    dec = Decoder(spec).state_dict()
    blocks = [
        {"offset": 0, "num_classes": 2, "latents": torch.randn(4, 4, 2), "decoder": dec, "alpha": 0.01},
        {"offset": 2, "num_classes": 1, "latents": torch.randn(2, 4, 2), "decoder": dec, "alpha": 0.02},
    ]
    latent = LatentSet(
        spec, blocks, lpc=2, soft_labels=torch.softmax(torch.randn(6, 3), 1), meta={"num_classes": 3}
    )
    latent.meta["class_names"] = ["a", "b", "c"]
    latent.save(base / "latent")
    return base


def check_loaded(art: DistilledSet | LatentSet) -> None:
    """What a loaded artifact promises its users."""
    if isinstance(art, LatentSet):
        assert art.num_priors >= 1 and art.num_classes >= 1
        return
    assert art.images.dtype == torch.float32 and art.images.ndim == 4 and torch.isfinite(art.images).all()
    assert art.lr > 0 and torch.isfinite(torch.tensor(art.lr))
    if art.labels is not None:
        assert art.labels.shape == (len(art.images),)
        assert 0 <= int(art.labels.min()) and int(art.labels.max()) < art.num_classes
    else:
        assert art.label_logits.shape == (len(art.images), art.num_classes)


def use_artifact(capsys, directory: Path) -> None:  # noqa: ANN001
    art = refused(DistilledSet.load, directory)
    if art is not None:
        check_loaded(art)
    code, err = cli(capsys, ["verify", str(directory)])
    check_one_line(code, err)
    if art is not None and isinstance(art, DistilledSet):
        # the command that uses an artifact: its evaluation (one network, one epoch: a few seconds)
        check_one_line(
            *cli(capsys, ["evaluate", str(directory), "--runs", "1", "eval.epochs=1", "eval.baseline=false"])
        )


@fuzz(60)
@given(
    which=st.sampled_from(["hard", "soft", "latent"]),
    damage=manifest_damage(("dataset", "storage", "preprocessing")),
)
@example(which="hard", damage=(lambda b: b"\xff" + b, "bytes"))
@example(which="hard", damage=(lambda b: b.replace(b'"ipc": 2', b'"ipc": 1e999'), "set"))
@example(which="latent", damage=(lambda b: b.replace(b'"blocks": [', b'"blocks": [7, '), "set"))
def test_fuzz_artifact_manifests(artifacts, tmp_path_factory, capsys, which, damage):
    use_artifact(
        capsys, damaged_copy(artifacts / which, tmp_path_factory.getbasetemp(), "manifest.json", damage[0])
    )


@fuzz(80)
@given(which=st.sampled_from(["hard", "soft", "latent"]), damage=header_damage())
def test_fuzz_artifact_headers(artifacts, tmp_path_factory, capsys, which, damage):
    directory = damaged_copy(
        artifacts / which, tmp_path_factory.getbasetemp(), "synthetic.safetensors", damage[0]
    )
    use_artifact(capsys, directory)


# -- trajectory stores ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory, digits_data):
    out = tmp_path_factory.mktemp("store") / "experts"
    train_experts(load_config("random-digits", TINY), out, digits_data, progress=False)
    return out


def use_store(capsys, root: Path) -> None:  # noqa: ANN001
    def read_all() -> list[torch.Tensor]:
        store = TrajectoryStore(root)
        out = []
        for i in store.completed:
            traj = store.load(i)
            assert traj.ndim == 2 and traj.shape[1] == store.num_params and torch.isfinite(traj).all()
            for epoch in (0, traj.shape[0] - 1):
                assert torch.equal(store.snapshot(i, epoch), traj[epoch])
            out.append(traj)
        return out

    refused(read_all)
    check_one_line(*cli(capsys, ["verify", str(root)]))


@fuzz(60)
@given(damage=manifest_damage(("identity", "experts", "info")))
@example(damage=(lambda b: b[:-1] + b"\xc3", "bytes"))
def test_fuzz_store_manifests(sound_store, tmp_path_factory, capsys, damage):
    use_store(capsys, damaged_copy(sound_store, tmp_path_factory.getbasetemp(), "manifest.json", damage[0]))


@fuzz(60)
@given(expert=st.integers(0, 1), damage=header_damage())
def test_fuzz_expert_shard_headers(sound_store, tmp_path_factory, capsys, expert, damage):
    shard = f"shard-{expert:05d}.safetensors"
    use_store(capsys, damaged_copy(sound_store, tmp_path_factory.getbasetemp(), shard, damage[0]))


# -- the distillation checkpoint -----------------------------------------------------------------


def edit_metadata(**changes: str | None):  # noqa: ANN201
    """A damage that changes header metadata (None: removes the entry) and drops the checksums, as a
    hand edit would."""

    def damage(blob: bytes) -> bytes:
        header, data = split(blob)
        meta = header.get("__metadata__", {})
        for k in (integrity.CHECKSUM_KEY, integrity.METADATA_KEY, *changes):
            meta.pop(k, None)
        meta.update({k: v for k, v in changes.items() if v is not None})
        return join(header, data)

    return damage, "edit"


@fuzz(60)
@given(damage=header_damage())
@example(damage=edit_metadata(state="[1]"))
@example(damage=edit_metadata(state=None))
@example(damage=edit_metadata(state="{"))
@example(damage=edit_metadata(format="something else"))
def test_fuzz_checkpoint_headers(tmp_path_factory, damage):
    path = fresh_dir(tmp_path_factory.getbasetemp()) / "distill.safetensors"
    write_checkpoint(path, {"images": torch.randn(4, 1, 8, 8), "lr": torch.tensor(0.01)}, {"next_it": 3})
    path.write_bytes(damage[0](path.read_bytes()))
    back = refused(read_checkpoint, path)
    if back is not None:
        tensors, state = back
        assert isinstance(tensors, dict) and isinstance(state, dict)
