"""User profile features of ``user_features.csv`` as categorical ids per column (0 = unknown).

Columns: ``user_active_degree``, the four ``*_range`` buckets, the three ``is_*`` flags and the encrypted
``onehot_feat0..17`` codes (up to 1,076 values: hashed ids, not one-hot vectors). The raw counts are left
out: their ``*_range`` buckets carry them. Vocabularies come from every row of the file (so a code has one
id in every dataset); a missing code, the literal ``UNKNOWN`` degree and a user the file lacks get 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.data.features.alignment import (
    UNKNOWN_STRINGS,
    categorical_codes,
    check_overlap,
    check_unique,
    existing_rows,
    internal_index,
    scatter_rows,
)
from sasrec.data.features.table import FeatureGroup
from sasrec.data.kuairec.readers import read_user_features

SOURCE = "user_features.csv"
STRING_COLUMNS = (
    "user_active_degree",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)
FLAG_COLUMNS = ("is_lowactive_period", "is_live_streamer", "is_video_author")
CODE_COLUMNS = tuple(f"onehot_feat{i}" for i in range(18))
USER_COLUMNS = (*STRING_COLUMNS, *FLAG_COLUMNS, *CODE_COLUMNS)


def user_group(path: Path, data: PreparedData) -> FeatureGroup:
    """Categorical user features: (num_users + 1, 26) int32 ids, 0 = unknown.

    Raises:
        DataValidationError: the reader's checks, a duplicated ``user_id``, or no user of the dataset.
    """
    frame = read_user_features(path)
    users = frame["user_id"].to_numpy(dtype=np.int64)  # (n_file,)
    check_unique(path, "user_id", users, "user")
    file_rows = internal_index(data.user_ids, users)
    check_overlap(path, "user_id", users, file_rows, data.name)
    columns, vocabularies = [], {}
    for name in USER_COLUMNS:  # 26 columns, not rows
        values = frame[name]
        if name in STRING_COLUMNS:
            text = values.astype("string").str.strip()
            unknown = (text.str.len() == 0) | text.str.upper().isin(UNKNOWN_STRINGS)
            codes, vocab = categorical_codes(text, unknown=unknown.to_numpy(dtype=bool, na_value=False))
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            codes, vocab = categorical_codes(
                numbers, unknown=(numbers < 0).to_numpy(dtype=bool, na_value=False)
            )
        columns.append(codes)
        vocabularies[name] = vocab
    n_rows = data.num_users + 1
    values = scatter_rows(file_rows, np.stack(columns, axis=1), n_rows)  # (n_users + 1, 26)
    present = existing_rows(data.events["user"].to_numpy(), n_rows)
    if data.labels is not None and len(data.labels):
        present |= existing_rows(data.labels["user"].to_numpy(), n_rows)
    return FeatureGroup(
        name="user",
        entity="user",
        kind="categorical",
        source=SOURCE,
        columns=USER_COLUMNS,
        values=values,
        vocabularies=vocabularies,
        covered=int(np.count_nonzero(present & (values > 0).any(axis=1))),
        notes="one id per value over the whole file (sorted); missing, UNKNOWN or absent user = 0",
    )
