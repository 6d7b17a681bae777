"""Matching objectives: what a student's parameters (or gradients, or features) are compared with."""

from .trajectory import ParameterMatch, normalized_match

__all__ = ["ParameterMatch", "normalized_match"]
