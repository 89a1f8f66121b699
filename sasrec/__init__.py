"""SASRec and its rivals on KuaiRec 2.0: data, simulator, models, training, evaluation and reports.

``from sasrec import Recommender`` gives the public inference API (loaded on first use, so that
``import sasrec`` stays cheap for the command line's help).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sasrec.errors import SasrecError

if TYPE_CHECKING:
    from sasrec.inference.recommender import Recommender

__all__ = ["Recommender", "SasrecError"]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from sasrec.inference.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'sasrec' has no attribute {name!r}")
