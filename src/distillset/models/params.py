"""Flat parameter vectors: one 1-D tensor per network, as trajectory matching stores and differentiates them.

A `ParamLayout` maps parameter names to slices of the flat vector in `named_parameters()` order (the order
PAD's masks and the trajectory store rely on). `functional_forward` runs a model on any flat vector, so the
inner loop of MTT/DATM can differentiate the student's loss with respect to the vector itself.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call


class Span(NamedTuple):
    """A named half-open range [start, end) of the flat vector."""

    name: str
    start: int
    end: int


@dataclass(frozen=True)
class ParamEntry:
    """One parameter tensor's place in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def end(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class ParamLayout:
    """The ordered (name, shape, offset, numel) entries of a network's flat parameter vector."""

    entries: tuple[ParamEntry, ...]

    @classmethod
    def from_shapes(cls, named_shapes: Iterable[tuple[str, Iterable[int]]]) -> ParamLayout:
        entries, offset = [], 0
        for name, shape in named_shapes:
            shape = tuple(int(s) for s in shape)
            n = math.prod(shape)
            entries.append(ParamEntry(name, shape, offset, n))
            offset += n
        return cls(tuple(entries))

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamLayout:
        return cls.from_shapes((name, p.shape) for name, p in model.named_parameters())

    @property
    def numel(self) -> int:
        return self.entries[-1].end if self.entries else 0

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ParamEntry]:
        return iter(self.entries)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Name -> view of `flat` in the parameter's shape: writes to `flat` show through, grads flow back."""
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ValueError(
                f"Expected a flat vector of {self.numel} parameters, got shape {tuple(flat.shape)}; "
                "was it made for another model?"
            )
        return {e.name: flat[e.offset : e.end].view(e.shape) for e in self.entries}

    def flatten(self, params: Mapping[str, Tensor] | nn.Module) -> Tensor:
        """Concatenate parameters in layout order into a new 1-D tensor.

        A module gives a detached copy of its weights; a mapping keeps the autograd graph (extra keys, such
        as buffers in a state dict, are ignored).
        """
        if isinstance(params, nn.Module):
            named = dict(params.named_parameters())
            tensors = [named[e.name].detach() for e in self._checked(named)]
        else:
            tensors = [params[e.name] for e in self._checked(params)]
        if not tensors:
            return torch.empty(0)
        # torch.cat always allocates, so the result never aliases the inputs.
        return torch.cat([t.reshape(-1) for t in tensors])

    def _checked(self, named: Mapping[str, Tensor]) -> tuple[ParamEntry, ...]:
        missing = [e.name for e in self.entries if e.name not in named]
        if missing:
            raise ValueError(f"Parameters missing for this layout: {', '.join(missing[:5])}.")
        for e in self.entries:
            if tuple(named[e.name].shape) != e.shape:
                raise ValueError(
                    f"Parameter {e.name} has shape {tuple(named[e.name].shape)}, expected {e.shape}."
                )
        return self.entries

    def param_boundaries(self) -> list[Span]:
        """One (name, start, end) per parameter tensor, in flat order."""
        return [Span(e.name, e.offset, e.end) for e in self.entries]

    def layer_boundaries(self) -> list[Span]:
        """One (module name, start, end) per module that owns parameters, covering [0, numel) in order.

        `named_parameters()` lists each module's own parameters together, so modules are contiguous.
        Parameters of the root module itself get the name "".
        """
        spans: list[Span] = []
        for e in self.entries:
            module = e.name.rpartition(".")[0]
            if spans and spans[-1].name == module:
                spans[-1] = Span(module, spans[-1].start, e.end)
            else:
                spans.append(Span(module, e.offset, e.end))
        return spans

    def fingerprint(self) -> str:
        """16 hex digits hashing the names and shapes: equal layouts, equal fingerprints, across processes."""
        h = hashlib.blake2b(digest_size=8)
        h.update(repr([(e.name, e.shape) for e in self.entries]).encode())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description (for manifests); `from_dict` inverts it."""
        return {
            "numel": self.numel,
            "fingerprint": self.fingerprint(),
            "params": [[e.name, list(e.shape)] for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamLayout:
        return cls.from_shapes((name, shape) for name, shape in d["params"])


def flat_params(model: nn.Module) -> Tensor:
    """A detached copy of the model's parameters as one 1-D tensor (same device and dtype).

    Always a fresh tensor: saving `p.detach().cpu()` of a CPU model aliases the live weights, which is how
    the field's buffer.py came to store identical snapshots when run on CPU.
    """
    return ParamLayout.from_model(model).flatten(model)


@torch.no_grad()
def load_flat_(model: nn.Module, flat: Tensor) -> nn.Module:
    """Copy a flat vector into the model's parameters in place (casting to their dtype and device)."""
    views = ParamLayout.from_model(model).unflatten(flat)
    for name, p in model.named_parameters():
        p.copy_(views[name])
    return model


def functional_forward(
    model: nn.Module,
    flat: Tensor,
    x: Tensor,
    buffers: Mapping[str, Tensor] | None = None,
    *,
    layout: ParamLayout | None = None,
) -> Tensor:
    """`model(x)` with the parameters taken from `flat` (differentiable with respect to `flat`).

    `buffers` (e.g. BatchNorm running statistics) replace the model's own; left out, the model's buffers are
    used and, in training mode, updated in place. Pass `layout` to skip rebuilding it on every call.
    """
    params = (layout or ParamLayout.from_model(model)).unflatten(flat)
    return functional_call(model, {**params, **(buffers or {})}, (x,))


class _Features(nn.Module):
    """Calls `forward_features`: functional_call only reaches `forward`, so wrap the model in a module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def functional_features(
    model: nn.Module,
    flat: Tensor,
    x: Tensor,
    buffers: Mapping[str, Tensor] | None = None,
    *,
    layout: ParamLayout | None = None,
) -> Tensor:
    """`model.forward_features(x)` with the parameters taken from `flat`; see `functional_forward`."""
    params = (layout or ParamLayout.from_model(model)).unflatten(flat)
    state = {f"model.{k}": v for k, v in {**params, **(buffers or {})}.items()}
    return functional_call(_Features(model), state, (x,))
