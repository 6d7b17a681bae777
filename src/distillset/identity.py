"""What must match: one rule for expert stores, score files and distillation checkpoints.

A file made by one stage and read by another (a trajectory store, a score file, a checkpoint) records
the settings that made it; a reader compares them with its own and stops at the first difference.
The settings are the config sections the stage depends on, every key written out except those marked
`result: False` in config.py (keys that do not change what is computed, such as how many experts to
train or how often to checkpoint: a run may extend them) and those marked `only_if: switch` while their
switch is off (GSAM's radius for SGD experts, the curriculum's epochs for experts without one).

A key added to a section in a later version, with a default that keeps the old behaviour, must not make
older files unreadable: when two identities are compared, a section key missing on one side counts as
its default. So a store written before AST's keys existed still matches a config that leaves them at
their defaults, and refuses one that switches them on.
"""

from __future__ import annotations

import json
import math

from pydantic import BaseModel

from .config import D3Config, DistillConfig, EvalConfig, ExpertsConfig, ScoresConfig


def _same(a: object, b: object) -> bool:
    """Equality, except that floats agree to 1e-6 relative: statistics fitted on the same data (the
    mean and std in the preprocessing) differ in their last bits between thread counts and machines."""
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(b, float) and isinstance(a, int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def first_difference(a: object, b: object, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    return None if _same(a, b) else f"{path} ({a!r} there, {b!r} now)"


# identity keys that hold a config section's settings, and the section's model
SECTIONS: dict[str, type[BaseModel]] = {
    "experts": ExpertsConfig,
    "scores": ScoresConfig,
    "distill": DistillConfig,
    "d3": D3Config,
    "eval": EvalConfig,
}


def settings(section: BaseModel) -> dict:
    """The section's keys that change a result, as JSON values (every default written out): all but
    those marked `result: False`, and those marked `only_if: switch` while the switch is at its default."""
    fields = type(section).model_fields
    skip = set()
    for key, f in fields.items():
        extra = f.json_schema_extra or {}
        switch = extra.get("only_if")
        if extra.get("result") is False or (
            switch is not None and getattr(section, switch) == fields[switch].default
        ):
            skip.add(key)
    return section.model_dump(mode="json", exclude=skip)


def as_stored(identity: dict) -> dict:
    """The identity as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(identity))


def _filled(identity: dict) -> dict:
    out = dict(identity)
    for key, model in SECTIONS.items():
        if isinstance(out.get(key), dict):
            out[key] = {**model().model_dump(mode="json"), **out[key]}
    return out


def mismatch(saved: dict | None, current: dict) -> str | None:
    """The first setting that differs between a file's identity and the current one (None: they match);
    section keys missing on either side count as their defaults."""
    if not isinstance(saved, dict):
        return f"identity ({saved!r} there)"
    return first_difference(_filled(as_stored(saved)), _filled(as_stored(current)))
