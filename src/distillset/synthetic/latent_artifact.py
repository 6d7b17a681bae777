"""The distributional artifact (D3): decoders, latent priors, soft labels and learned lrs, per sub-task.

`synthetic.safetensors` holds, for each class block k, `block{k}.latents` (N_k x z x 2: mu and
log sigma^2 per prior), `block{k}.decoder.<name>` (the block's decoder) and `block{k}.alpha` (its raw
learned lr); then `soft_labels` (N x C probabilities, one C-vector per prior, from one all-class expert)
or `labels` (hard, global). `manifest.json` holds the decoder spec, the blocks' class offsets, `lpc` and
the storage count. A network trains, each epoch, on every prior's decoded mean plus `samples` fresh
samples per prior; a sample inherits its prior's label.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import __version__, integrity
from ..errors import InvalidValuesError, StoreError
from ..errors import short_repr as _short
from ..utils import generator, write_json
from .decoders import Decoder, DecoderSpec

FORMAT = "distillset.distilled/1"
KIND = "distributional"
FLOAT_BYTES = 4
INT_BYTES = 8
ARTIFACT_FIX = (
    "make the artifact again: run the command that wrote it once more (a finished run rewrites its "
    "distilled sets from its checkpoint)"
)


def storage_summary(parts_bytes: dict[str, int], floats: int, num_classes: int, image_shape) -> dict:
    """Bytes per part, the count of stored floats, and that count in IPC-equivalents: floats over
    C x C_in x H x W, the floats of one real image per class. Hard labels are integers: they count in
    bytes, not in floats."""
    per_ipc = num_classes * math.prod(image_shape)
    return {
        "bytes": {**parts_bytes, "total": sum(parts_bytes.values())},
        "floats": int(floats),
        "ipc_equivalent": floats / per_ipc if per_ipc else float("nan"),
    }


def save_artifact(directory: str | Path, tensors: dict[str, Tensor], manifest: dict) -> Path:
    """Write an artifact of either kind, the tensors with their checksum; the manifest goes last, so a
    directory with a manifest is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    integrity.save(directory / "synthetic.safetensors", tensors)
    write_json(directory / "manifest.json", manifest)
    return directory


# -- checks on load, shared by both kinds of artifact ------------------------------------------


def check_lr(path: Path, lr: Tensor, what: str = "the lr") -> float:
    """A stored lr: one float32, finite and positive (SGD cannot train with another)."""
    integrity.check_dtype(path, what, lr.dtype, (torch.float32,), ARTIFACT_FIX)
    integrity.check_shape(path, what, lr.shape, (), ARTIFACT_FIX)
    value = float(lr)
    if not math.isfinite(value) or value <= 0:
        raise InvalidValuesError(path, f"{what} is {value:g}, not a positive number", ARTIFACT_FIX)
    return value


def check_manifest(directory: Path, manifest: dict, found: dict[str, tuple[object, str]]) -> None:
    """Stop at the first manifest field that disagrees with what the tensors hold: `found` maps a field
    to its value and to what the tensors hold, in words. A field the manifest lacks is not checked
    (artifacts of earlier versions may lack some)."""
    for key, (value, held) in found.items():
        if key not in manifest:
            continue
        stored = manifest[key]
        if isinstance(value, float) and isinstance(stored, int | float) and not isinstance(stored, bool):
            same = math.isclose(stored, value, rel_tol=1e-6)
        else:
            same = stored == value
        if not same:
            raise InvalidValuesError(
                directory / "manifest.json",
                f"it says {key} {stored!r} but synthetic.safetensors holds {held} (the two files are not of "
                "one artifact)",
                ARTIFACT_FIX,
            )


# the manifest fields a reader uses, and what each must be (a field an older artifact lacks is not checked)
FIELD_TYPES: dict[str, tuple[type, str]] = {
    "method": (str, "a name"),
    "dataset": (dict, "a mapping"),
    "class_names": (list, "a list of names"),
    "preprocessing": (dict, "a mapping"),
    "split": (dict, "a mapping"),
    "config": (dict, "a mapping"),
    "distill": (dict, "a mapping"),
    "storage": (dict, "a mapping"),
    "image_shape": (list, "a list of sizes"),
}


def check_fields(directory: Path, manifest: dict) -> None:
    """Stop when a field the readers use has the wrong type (a hand edit, another program's file)."""
    mpath = directory / "manifest.json"
    for key, (kind, what) in FIELD_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise InvalidValuesError(mpath, f"its {key} is {_short(manifest[key])}, not {what}", ARTIFACT_FIX)
    if not all(isinstance(n, str) for n in manifest.get("class_names", [])):
        raise InvalidValuesError(mpath, "its class_names are not all names (strings)", ARTIFACT_FIX)
    name = manifest.get("dataset", {}).get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidValuesError(mpath, f"its dataset.name is {_short(name)}, not a name", ARTIFACT_FIX)
    for key in ("ipc", "lpc", "num_images", "num_priors"):
        value = manifest.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidValuesError(
                mpath, f"its {key} is {_short(value)}, not a positive count", ARTIFACT_FIX
            )


def num_classes_of(directory: Path, manifest: dict) -> int | None:
    """The manifest's class count, checked against its class names (None when it records none)."""
    if "num_classes" not in manifest:
        return None
    c = manifest["num_classes"]
    mpath = directory / "manifest.json"
    if not isinstance(c, int) or isinstance(c, bool) or c < 1:
        raise InvalidValuesError(mpath, f"num_classes is {c!r}, not a positive count", ARTIFACT_FIX)
    names = manifest.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != c):
        count = len(names) if isinstance(names, list) else names
        raise InvalidValuesError(mpath, f"it names {count} classes but says num_classes {c}", ARTIFACT_FIX)
    return c


STEP_FLOOR = 1e-4  # the student's step is LeakyReLU(alpha) + 1e-4 (never zero or negative)


def step_size(alpha: Tensor) -> Tensor:
    return F.leaky_relu(alpha, 0.01) + STEP_FLOOR


def sample_latents(latents: Tensor, gen: torch.Generator) -> Tensor:
    """z = mu + exp(log sigma^2 / 2) * eps, eps ~ N(0, I) drawn on the CPU generator `gen`."""
    mu, logvar = latents[..., 0], latents[..., 1]
    eps = torch.randn(mu.shape, generator=gen).to(mu.device, mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def image_storage(num_images: int, image_shape, num_classes: int, label_logits: int = 0) -> dict:
    """The storage of `num_images` float32 images with hard labels (int64), or with `label_logits`
    float32 label logits each, and one lr."""
    pixels = num_images * math.prod(image_shape)
    labels = num_images * label_logits
    parts = {
        "images": pixels * FLOAT_BYTES,
        "labels": labels * FLOAT_BYTES if label_logits else num_images * INT_BYTES,
        "lr": FLOAT_BYTES,
        "decoders": 0,
        "latents": 0,
    }
    return storage_summary(parts, pixels + 1 + labels, num_classes, image_shape)


@dataclass
class LatentSet:
    """A distributional distilled set: `blocks` of (offset, num_classes, latents, decoder, alpha)."""

    spec: DecoderSpec
    blocks: list[dict]
    lpc: int
    soft_labels: Tensor | None = None
    meta: dict = field(default_factory=dict)
    kind = KIND

    def __post_init__(self) -> None:
        n = sum(int(b["latents"].shape[0]) for b in self.blocks)
        if self.soft_labels is not None and self.soft_labels.shape[0] != n:
            raise ValueError(f"{n} priors but {self.soft_labels.shape[0]} soft labels.")

    # -- what it is ------------------------------------------------------------------------------
    @property
    def num_priors(self) -> int:
        return sum(int(b["latents"].shape[0]) for b in self.blocks)

    @property
    def num_classes(self) -> int:
        return sum(int(b["num_classes"]) for b in self.blocks)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.channels, self.spec.height, self.spec.width

    @property
    def label_kind(self) -> str:
        return "soft" if self.soft_labels is not None else "hard"

    def with_hard_labels(self) -> LatentSet:
        """The same priors with their classes as hard labels (DD-Ranking's syn-hard)."""
        return dataclasses.replace(self, soft_labels=None)

    @property
    def lr(self) -> float:
        """The evaluation lr: the blocks' learned step sizes LeakyReLU(alpha) + 1e-4, weighted by
        their number of classes (one block: its own)."""
        total = sum(b["num_classes"] * float(step_size(torch.tensor(b["alpha"]))) for b in self.blocks)
        return total / self.num_classes

    @property
    def hard_labels(self) -> Tensor:
        """Global labels: the block's offset plus the local label, lpc per class."""
        return torch.cat(
            [b["offset"] + torch.arange(b["num_classes"]).repeat_interleave(self.lpc) for b in self.blocks]
        )

    @property
    def targets(self) -> Tensor:
        """What a network trains on: soft labels as log-probabilities (softmax gives them back), or
        the hard labels."""
        if self.soft_labels is None:
            return self.hard_labels
        return torch.log(self.soft_labels.clamp_min(1e-30))

    def baseline_ipc(self) -> int:
        """Random real images per class at the same storage (at least one)."""
        return max(1, round(self.storage()["ipc_equivalent"]))

    # -- decoding --------------------------------------------------------------------------------
    def decoders(self, device: torch.device | str = "cpu") -> list[Decoder]:
        """Each block's decoder, built under a forked RNG (loading an artifact draws nothing)."""
        out = []
        with torch.random.fork_rng(devices=[]):
            for b in self.blocks:
                dec = Decoder(self.spec)
                dec.load_state_dict(b["decoder"])
                out.append(dec.to(device).eval())
        return out

    @torch.no_grad()
    def _decode(self, decoders: list[Decoder], z_of, device: torch.device | str) -> Tensor:  # noqa: ANN001
        """Every block's priors, mapped to latent codes by `z_of` and decoded as one batch per block."""
        return torch.cat(
            [d(z_of(b["latents"].to(device))) for d, b in zip(decoders, self.blocks, strict=True)]
        )

    def means(self, device: torch.device | str = "cpu", decoders: list[Decoder] | None = None) -> Tensor:
        """Every prior's decoded mean (each block's priors decoded as one batch)."""
        return self._decode(decoders or self.decoders(device), lambda z: z[..., 0], device)

    def samples(
        self,
        gen: torch.Generator,
        draws: int = 1,
        device: torch.device | str = "cpu",
        decoders: list[Decoder] | None = None,
    ) -> Tensor:
        """`draws` x N fresh samples: each draw decodes every block's priors as one batch."""
        decoders = decoders or self.decoders(device)
        return torch.stack(
            [self._decode(decoders, lambda z: sample_latents(z, gen), device) for _ in range(draws)]
        )

    def epoch_data(self, seed: int, tags: tuple, samples: int = 1) -> LatentEpochs:
        return LatentEpochs(self, seed, tags, samples)

    # -- storage ---------------------------------------------------------------------------------
    def storage(self) -> dict:
        dec = sum(int(v.numel()) for b in self.blocks for v in b["decoder"].values())
        lat = sum(int(b["latents"].numel()) for b in self.blocks)
        lr = len(self.blocks)
        if self.soft_labels is not None:
            lab_floats, lab_bytes = int(self.soft_labels.numel()), int(self.soft_labels.numel()) * FLOAT_BYTES
        else:
            lab_floats, lab_bytes = 0, self.num_priors * INT_BYTES
        parts = {
            "images": 0,
            "labels": lab_bytes,
            "lr": lr * FLOAT_BYTES,
            "decoders": dec * FLOAT_BYTES,
            "latents": lat * FLOAT_BYTES,
        }
        return storage_summary(parts, dec + lat + lr + lab_floats, self.num_classes, self.image_shape)

    # -- files -----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k, b in enumerate(self.blocks):
            out[f"block{k}.latents"] = b["latents"].detach().to("cpu", torch.float32).contiguous()
            out[f"block{k}.alpha"] = torch.tensor(float(b["alpha"]), dtype=torch.float32)
            for name, v in b["decoder"].items():
                out[f"block{k}.decoder.{name}"] = v.detach().to("cpu", torch.float32).clone()
        if self.soft_labels is not None:
            out["soft_labels"] = self.soft_labels.detach().to("cpu", torch.float32).contiguous()
        else:
            out["labels"] = self.hard_labels.to(torch.int64).contiguous()
        return out

    def manifest(self) -> dict:
        storage = self.storage()
        return {
            "format": FORMAT,
            "kind": KIND,
            "distillset_version": __version__,
            **self.meta,
            "decoder": self.spec.to_dict(),
            "blocks": [
                {"offset": int(b["offset"]), "num_classes": int(b["num_classes"])} for b in self.blocks
            ],
            "lpc": self.lpc,
            "num_priors": self.num_priors,
            "image_shape": list(self.image_shape),
            "label_kind": self.label_kind,
            "lr": self.lr,
            "storage_bytes": storage["bytes"],
            "storage": storage,
        }

    def save(self, directory: str | Path) -> Path:
        return save_artifact(directory, self.tensors(), self.manifest())

    @classmethod
    def from_files(cls, directory: Path, manifest: dict, t: dict[str, Tensor]) -> LatentSet:
        """The set in an artifact's manifest and tensors, checked: every tensor finite and of the shape
        the decoder spec, `lpc` and the blocks give; the blocks' classes contiguous; the labels those of
        the blocks; the lr positive; the manifest's counts and shapes those of the tensors."""
        try:
            spec = DecoderSpec.from_dict(manifest["decoder"])
            lpc = int(manifest["lpc"])
            blocks = []
            for k, b in enumerate(manifest["blocks"]):
                prefix = f"block{k}.decoder."
                blocks.append(
                    {
                        "offset": int(b["offset"]),
                        "num_classes": int(b["num_classes"]),
                        "latents": t[f"block{k}.latents"],
                        "alpha": t[f"block{k}.alpha"],
                        "decoder": {n[len(prefix) :]: v for n, v in t.items() if n.startswith(prefix)},
                    }
                )
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(
                f"the distributional artifact in {directory} is incomplete ({e}); make it again."
            ) from e
        tpath = directory / "synthetic.safetensors"
        held = {n.split(".", 1)[0] for n in t if n.startswith("block")}
        if not blocks or held != {f"block{k}" for k in range(len(blocks))}:
            raise InvalidValuesError(
                directory / "manifest.json",
                f"it lists {len(blocks)} blocks but synthetic.safetensors holds {len(held)}",
                ARTIFACT_FIX,
            )
        _check_blocks(directory, spec, lpc, blocks)
        for b in blocks:
            b["alpha"] = float(b["alpha"])
        derived = {
            "format",
            "kind",
            "distillset_version",
            "decoder",
            "blocks",
            "lpc",
            "num_priors",
            "image_shape",
            "label_kind",
            "lr",
            "storage_bytes",
            "storage",
        }
        meta = {k: v for k, v in manifest.items() if k not in derived}
        try:
            art = cls(spec, blocks, lpc, t.get("soft_labels"), meta)
        except ValueError as e:  # soft labels for another number of priors
            raise InvalidValuesError(tpath, str(e).rstrip("."), ARTIFACT_FIX) from e
        _check_labels(directory, manifest, art, t)
        return art


def _check_blocks(directory: Path, spec: DecoderSpec, lpc: int, blocks: list[dict]) -> None:
    """Each block's latents, raw lr and decoder against the spec; the blocks' classes contiguous."""
    tpath, fix = directory / "synthetic.safetensors", ARTIFACT_FIX
    with torch.device("meta"):  # the decoder's parameter shapes, allocating and drawing nothing
        shapes = {n: tuple(v.shape) for n, v in Decoder(spec).state_dict().items()}
    offset = 0
    for k, b in enumerate(blocks):
        if b["offset"] != offset or b["num_classes"] < 1:
            raise InvalidValuesError(
                directory / "manifest.json",
                f"block {k} covers classes from {b['offset']} ({b['num_classes']} of them), but the blocks "
                f"must cover the classes in order (it would start at {offset})",
                fix,
            )
        offset += b["num_classes"]
        latents = b["latents"]
        integrity.check_dtype(tpath, f"block{k}.latents", latents.dtype, (torch.float32,), fix)
        want = (lpc * b["num_classes"], spec.z_dim, 2)
        integrity.check_shape(tpath, f"block{k}.latents", latents.shape, want, fix)
        integrity.check_finite(tpath, f"block{k}.latents", latents, fix, unit="prior")
        integrity.check_shape(tpath, f"block{k}.alpha", b["alpha"].shape, (), fix)
        integrity.check_finite(tpath, f"block{k}.alpha", b["alpha"], fix)
        if set(b["decoder"]) != set(shapes):
            raise InvalidValuesError(
                tpath, f"block {k}'s decoder does not have the parameters its spec gives", fix
            )
        for name, v in b["decoder"].items():
            integrity.check_shape(tpath, f"block{k}.decoder.{name}", v.shape, shapes[name], fix)
            integrity.check_finite(tpath, f"block{k}.decoder.{name}", v, fix)


def _check_labels(directory: Path, manifest: dict, art: LatentSet, t: dict[str, Tensor]) -> None:
    """The labels (soft: finite probabilities, one row per prior; hard: the blocks' own), the lr and
    the manifest's counts against the tensors."""
    tpath, fix = directory / "synthetic.safetensors", ARTIFACT_FIX
    n, c = art.num_priors, art.num_classes
    if ("labels" in t) == ("soft_labels" in t):
        raise InvalidValuesError(tpath, "it must hold exactly one of labels or soft_labels", fix)
    if art.soft_labels is not None:
        soft = art.soft_labels
        integrity.check_dtype(tpath, "soft_labels", soft.dtype, (torch.float32,), fix)
        integrity.check_shape(tpath, "soft_labels", soft.shape, (n, c), fix)
        integrity.check_finite(tpath, "soft_labels", soft, fix, unit="prior")
        if soft.numel() and float(soft.min()) < 0:
            raise InvalidValuesError(tpath, "soft_labels hold negative probabilities", fix)
    else:
        integrity.check_shape(tpath, "labels", t["labels"].shape, (n,), fix)
        integrity.check_labels(tpath, "labels", t["labels"], c, fix)
        if not torch.equal(t["labels"], art.hard_labels):
            raise InvalidValuesError(tpath, "labels are not those of the blocks' priors", fix)
    lr = check_lr(tpath, torch.tensor(art.lr, dtype=torch.float32), "the blocks' step size (lr)")
    if num_classes_of(directory, manifest) not in (None, c):
        problem = f"it says num_classes {manifest['num_classes']} but its blocks cover {c}"
        raise InvalidValuesError(directory / "manifest.json", problem, fix)
    image_shape = list(art.image_shape)
    found = {
        "num_priors": (n, f"{n} priors"),
        "image_shape": (image_shape, f"a decoder of images of shape {image_shape}"),
        "label_kind": (art.label_kind, f"{art.label_kind} labels"),
        "lr": (lr, f"step sizes giving lr {lr:g}"),
    }
    check_manifest(directory, manifest, found)


class LatentEpochs:
    """The training data of one network, epoch by epoch: every decoded mean plus `samples` fresh
    samples per prior (drawn from (seed, tags, epoch): the same on every run and after a resume)."""

    def __init__(
        self, art: LatentSet, seed: int, tags: tuple, samples: int = 1, device: str | torch.device = "cpu"
    ):
        self.art, self.seed, self.tags, self.draws = art, seed, tags, samples
        self.device = torch.device(device)
        self._decoders: list[Decoder] | None = None
        self._means: Tensor | None = None
        self._targets: Tensor | None = None

    def to_device(self, device: torch.device | str) -> LatentEpochs:
        return LatentEpochs(self.art, self.seed, self.tags, self.draws, device)

    def for_network(self, *tags: object) -> LatentEpochs:
        return LatentEpochs(self.art, self.seed, (*self.tags, *tags), self.draws, self.device)

    def shape(self) -> tuple[int, bool]:
        """(images per epoch, whether the targets are soft)."""
        return self.art.num_priors * (1 + self.draws), self.art.soft_labels is not None

    def __call__(self, epoch: int) -> tuple[Tensor, Tensor]:
        if self._means is None:  # once per network: the decoders, the means and the targets
            self._decoders = self.art.decoders(self.device)
            self._means = self.art.means(self.device, self._decoders)
            self._targets = self.art.targets.to(self.device)
        gen = generator(self.seed, *self.tags, "samples", epoch)
        drawn = self.art.samples(gen, self.draws, self.device, self._decoders).flatten(0, 1)
        x = torch.cat([self._means, drawn])
        y = torch.cat([self._targets] * (1 + self.draws))
        return x, y
