"""Datasets: the common :class:`Problem` record, loaders for benchmark formats, filters, synthetic tasks."""

from archer.data.schema import Problem, load_problems_from_rows

__all__ = ["Problem", "load_problems_from_rows"]
