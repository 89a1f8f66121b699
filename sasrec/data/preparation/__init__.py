"""Data preparation: KuaiRec matrices or SASRec text files to time-ordered sequences and three splits.

``from sasrec.data import preparation`` then ``preparation.load_prepared("small_matrix")``.
"""

from __future__ import annotations

from sasrec.data.preparation.core import prepare_frame
from sasrec.data.preparation.params import (
    ARTIFACT_FILES,
    DATASETS,
    DEFAULT_PARAMS,
    NO_REMAPPING_SUFFIX,
    PREPARE_VERSION,
)
from sasrec.data.preparation.pipeline import load_prepared, prepare
from sasrec.data.preparation.sources import default_data_dir
from sasrec.data.preparation.splits import check_no_leakage, check_split_usable
from sasrec.data.preparation.text import read_sasrec_text

__all__ = [
    "DATASETS",
    "NO_REMAPPING_SUFFIX",
    "PREPARE_VERSION",
    "ARTIFACT_FILES",
    "DEFAULT_PARAMS",
    "default_data_dir",
    "read_sasrec_text",
    "check_no_leakage",
    "check_split_usable",
    "prepare_frame",
    "prepare",
    "load_prepared",
]
