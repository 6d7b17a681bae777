"""Matching objectives: what a student's parameters (or gradients, or features) are compared with."""

from .trajectory import ParameterMatch, deep_parameters, dropped_share, normalized_match

__all__ = ["ParameterMatch", "deep_parameters", "dropped_share", "normalized_match"]
