"""Datasets: the in-memory splits every stage consumes and the loaders that read them from disk."""

from distillset.data.base import Dataset, Split
from distillset.data.sources import SourceData, list_datasets, load_dataset, register_dataset

__all__ = ["Dataset", "SourceData", "Split", "list_datasets", "load_dataset", "register_dataset"]
