"""SASRec and baselines on KuaiRec 2.0: data, simulator, models, evaluation and reports."""

from sasrec.errors import SasrecError

__all__ = ["SasrecError"]
__version__ = "0.1.0"
