"""distillset: dataset distillation with exact, constant-memory meta-gradients and honest evaluation."""

from importlib.metadata import version

__version__ = version("distillset")
