"""The model registry: build any of the field's networks by name, input shape and class count.

Also home of `DistillModel`, the small base every network subclasses, so that the distillation methods can
ask any model for penultimate features (DM, feature matching) or logits in the same way.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from ..errors import ConfigError


class ModelError(ConfigError, ValueError):
    """An unknown model name or option, or options that cannot build a network for the input shape."""


class DistillModel(nn.Module):
    """A classifier split timm-style into a feature extractor and a head.

    `forward(x) == forward_head(forward_features(x))`; `forward_features` returns (N, feature_dim).
    `spec` holds everything needed to rebuild the network: `build_model_from_spec(model.spec)`.
    """

    model_name: ClassVar[str] = ""  # set by @register_model
    feature_dim: int
    spec: dict[str, Any]

    def _record_spec(self, channel: int, im_size: Iterable[int], num_classes: int, **options: Any) -> None:
        h, w = (int(s) for s in im_size)
        self.in_shape = (int(channel), h, w)
        self.num_classes = int(num_classes)
        # Every option is recorded, defaults included, so a rebuild does not depend on today's defaults.
        self.spec = {
            "name": self.model_name or type(self).__name__.lower(),
            "in_shape": self.in_shape,
            "num_classes": self.num_classes,
            "options": dict(options),
        }

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------------------
# helpers shared by the model files


def closest_hint(name: str, valid: Iterable[str]) -> str:
    """' did you mean 'x'?' when a valid name is close to `name`, else ''."""
    match = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ModelError naming them and the closest."""
    choices = tuple(choices)
    if value not in choices:
        raise ModelError(
            f"Unknown {what} {value!r}.{closest_hint(value, choices)} Valid values: {', '.join(choices)}."
        )
    return value


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one axis (floor mode, dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


# ------------------------------------------------------------------------------------------------
# the registry

M = TypeVar("M", bound=DistillModel)
_FIXED_ARGS = ("channel", "num_classes", "im_size")


@dataclass(frozen=True)
class _Entry:
    cls: type[DistillModel]
    defaults: Callable[[tuple[int, int, int]], dict[str, Any]] | None
    options: tuple[str, ...]


@dataclass(frozen=True)
class _Alias:
    target: str
    fixed: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, _Entry] = {}
_ALIASES: dict[str, _Alias] = {}


def register_model(
    name: str,
    *,
    aliases: Mapping[str, Mapping[str, Any]] | None = None,
    defaults: Callable[[tuple[int, int, int]], dict[str, Any]] | None = None,
) -> Callable[[type[M]], type[M]]:
    """Class decorator: make a DistillModel buildable as `build_model(name, ...)`.

    The class must take `(channel, num_classes, ..., im_size=...)`; its other keyword arguments are the
    model's options. `aliases` maps extra names to fixed options (e.g. {"convnet_bn": {"norm": "batch"}});
    `defaults(in_shape)` supplies shape-dependent defaults (e.g. ConvNet's depth).
    """

    def decorator(cls: type[M]) -> type[M]:
        key = name.lower()
        params = inspect.signature(cls.__init__).parameters
        missing = [a for a in _FIXED_ARGS if a not in params]
        if missing:
            raise TypeError(f"{cls.__name__}.__init__ must accept {', '.join(missing)} to be registered.")
        options = tuple(p for p in params if p not in ("self", *_FIXED_ARGS))
        for n in (key, *(a.lower() for a in aliases or {})):
            if n in _MODELS or n in _ALIASES:
                raise ValueError(f"Model name {n!r} is already registered.")
        cls.model_name = key
        _MODELS[key] = _Entry(cls, defaults, options)
        for alias, fixed in (aliases or {}).items():
            _ALIASES[alias.lower()] = _Alias(key, dict(fixed))
        return cls

    return decorator


def list_models(include_aliases: bool = False) -> list[str]:
    """Registered model names, sorted; with `include_aliases` also the alias names."""
    names = set(_MODELS) | (set(_ALIASES) if include_aliases else set())
    return sorted(names)


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int, **options: Any) -> DistillModel:
    """Build a registered network for inputs of shape `in_shape` = (C, H, W) and `num_classes` outputs.

    Names are case-insensitive. Unknown names or options raise ModelError (a ValueError) naming the valid
    ones. Options left out take the model's defaults (for ConvNet, depth follows the image size).
    """
    key = str(name).lower()
    fixed: dict[str, Any] = {}
    if key in _ALIASES:
        alias = _ALIASES[key]
        key, fixed = alias.target, alias.fixed
    if key not in _MODELS:
        valid = list_models(include_aliases=True)
        raise ModelError(
            f"Unknown model {name!r}.{closest_hint(key, valid)} Valid models: {', '.join(valid)}."
        )
    entry = _MODELS[key]

    in_shape = _check_shape(in_shape)
    if int(num_classes) < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}.")
    for opt, value in options.items():
        if opt not in entry.options:
            raise ModelError(
                f"Unknown option {opt!r} for model {key!r}.{closest_hint(opt, entry.options)} "
                f"Valid options: {', '.join(entry.options)}."
            )
        if opt in fixed and value != fixed[opt]:
            raise ModelError(
                f"Model {name!r} fixes {opt}={fixed[opt]!r}; use {key!r} with {opt}={value!r} instead."
            )
    kwargs = {**(entry.defaults(in_shape) if entry.defaults else {}), **fixed, **options}
    return entry.cls(channel=in_shape[0], num_classes=int(num_classes), im_size=in_shape[1:], **kwargs)


def build_model_from_spec(spec: Mapping[str, Any]) -> DistillModel:
    """Rebuild a network (freshly initialised) from `model.spec`, e.g. as read back from a JSON manifest."""
    missing = [k for k in ("name", "in_shape", "num_classes") if k not in spec]
    if missing:
        raise ModelError(f"Spec lacks {', '.join(missing)}; expected name, in_shape, num_classes, options.")
    return build_model(spec["name"], tuple(spec["in_shape"]), spec["num_classes"], **spec.get("options", {}))


def _check_shape(in_shape: Iterable[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"in_shape must be (channels, height, width) of positive ints, got {in_shape!r}.")
    return shape  # type: ignore[return-value]
