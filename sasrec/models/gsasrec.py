"""gSASRec (Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential Recommendation Trained
with Negative Sampling", RecSys 2023).

The architecture is SASRec's; what makes gSASRec is its training: ``k`` uniform negatives per position and
the generalised binary cross-entropy (gBCE) whose calibration parameter ``t`` undoes the overconfidence that
negative sampling causes (:func:`sasrec.training.losses.gbce_loss`). Prediction ranks all items with the
final position's scores, as the paper does. The training presets (loss ``gbce``, ``num_negatives`` 256,
``gbce_t`` 0.75, the paper's defaults) live in :data:`sasrec.training.config.MODEL_PRESETS`.
"""

from __future__ import annotations

from sasrec.models.base import register
from sasrec.models.sasrec import SASRec


@register
class GSASRec(SASRec):
    """SASRec trained with gBCE over many negatives (Petrov & Macdonald, RecSys 2023)."""

    name = "gsasrec"
    checkpoint_prefix = "gSASRec"
