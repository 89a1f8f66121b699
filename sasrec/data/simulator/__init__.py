"""The KuaiRec-shaped simulator, the study's embedded default data (see :mod:`.calibration`).

``from sasrec.data import simulator`` then ``simulator.simulate(scale=0.2, seed=0, out_dir=...)``.
"""

from __future__ import annotations

from sasrec.data.simulator.api import (
    is_simulated,
    load_ground_truth,
    load_side_ground_truth,
    simulate,
    watch_ratio_statistics,
)
from sasrec.data.simulator.calibration import (
    BIG_SPAN,
    CAPTION_FILE,
    DAILY_FILE,
    DEFAULT_SCALE,
    GENERATOR_VERSION,
    GROUND_TRUTH_FILE,
    INTERACTION_COLUMNS,
    MAX_SCALE,
    METADATA_FILE,
    MIN_SCALE,
    N_TAGS,
    RATIO_KNOTS,
    REAL_BIG_USER_COUNTS,
    REAL_CALIBRATION,
    REAL_SMALL_USERS,
    REAL_SMALL_VIDEOS,
    REAL_USERS,
    REAL_VIDEOS,
    SIDE_GROUND_TRUTH_FILE,
    SMALL_SPAN,
    TAG_FREQUENCY,
    TAGS_PER_VIDEO_SHARE,
    SideFileParams,
    SimulationParams,
)

__all__ = [
    "GENERATOR_VERSION",
    "DEFAULT_SCALE",
    "MIN_SCALE",
    "MAX_SCALE",
    "REAL_USERS",
    "REAL_VIDEOS",
    "REAL_SMALL_USERS",
    "REAL_SMALL_VIDEOS",
    "N_TAGS",
    "TAG_FREQUENCY",
    "TAGS_PER_VIDEO_SHARE",
    "BIG_SPAN",
    "SMALL_SPAN",
    "REAL_BIG_USER_COUNTS",
    "RATIO_KNOTS",
    "REAL_CALIBRATION",
    "INTERACTION_COLUMNS",
    "GROUND_TRUTH_FILE",
    "METADATA_FILE",
    "CAPTION_FILE",
    "DAILY_FILE",
    "SIDE_GROUND_TRUTH_FILE",
    "SimulationParams",
    "SideFileParams",
    "is_simulated",
    "load_ground_truth",
    "load_side_ground_truth",
    "simulate",
    "watch_ratio_statistics",
]
