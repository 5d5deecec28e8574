"""Data: long-tailed splits of labelled arrays, and data sources."""
from .longtail import LongTailSplit, long_tail_counts, make_long_tailed

__all__ = ["LongTailSplit", "long_tail_counts", "make_long_tailed"]
