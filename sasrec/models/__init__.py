"""Models: SASRec and its rivals (tensors in, scores out) and the non-sequential baselines.

Models never read files: they take tensors, or a :class:`~sasrec.data.contracts.PreparedData` and a mask of
the events to fit on.
"""
