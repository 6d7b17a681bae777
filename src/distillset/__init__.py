"""distillset: dataset distillation with exact, constant-memory meta-gradients and honest evaluation.

The Python API in brief::

    import distillset as ds
    cfg = ds.load_config("random-digits", ["data.ipc=10"])
    data = ds.prepare(cfg.data, ds.resolve_device(cfg.device))
    store = ds.train_experts(cfg, "runs/digits/experts", data)
    art = ds.random_subset(cfg, data)          # the baseline
    art = ds.distill(ds.load_config("datm-digits"), "runs/datm")   # experts (reused) + DATM
    report = ds.evaluate(art, cfg, data)
    art.save("runs/digits/distilled"); ds.DistilledSet.load("runs/digits/distilled")
    ds.verify("runs/datm").ok                  # every checksum and value a stage reads
"""

from importlib.metadata import version

__version__ = version("distillset")

from .allocator import reuse_freed_memory  # noqa: E402

reuse_freed_memory()  # glibc: reuse freed activations instead of mapping them afresh (see allocator.py)

from .baseline import random_subset  # noqa: E402
from .config import Config, list_presets, load_config  # noqa: E402
from .data import load_dataset  # noqa: E402
from .data.prepared import PreparedData, prepare  # noqa: E402
from .evaluate import evaluate, format_report  # noqa: E402
from .experts.store import TrajectoryStore  # noqa: E402
from .experts.train import train_experts  # noqa: E402
from .integrity import verify  # noqa: E402
from .models import build_model  # noqa: E402
from .pipeline import distill, run_pipeline  # noqa: E402
from .synthetic import DistilledSet  # noqa: E402
from .utils import resolve_device  # noqa: E402

__all__ = [
    "Config",
    "DistilledSet",
    "PreparedData",
    "TrajectoryStore",
    "build_model",
    "distill",
    "evaluate",
    "format_report",
    "list_presets",
    "load_config",
    "load_dataset",
    "prepare",
    "random_subset",
    "resolve_device",
    "run_pipeline",
    "train_experts",
    "verify",
]
