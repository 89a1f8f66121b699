"""Tags of ``item_categories.csv`` as a multi-hot matrix over KuaiRec's 31 tags (0..30)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sasrec.data.contracts import PreparedData
from sasrec.data.features.alignment import check_overlap, check_unique, internal_index
from sasrec.data.features.table import FeatureGroup, canonical_csr, item_group
from sasrec.data.kuairec.readers import read_item_categories
from sasrec.errors import DataValidationError

SOURCE = "item_categories.csv"
#: KuaiRec 2.0 has 31 tags, 0..30 (checked on the real file: every one occurs, 1-4 per video).
N_TAGS = 31


def tag_group(path: Path, data: PreparedData) -> FeatureGroup:
    """Multi-hot tags of every item: (num_items + 1, 31) CSR, 1.0 per tag; an untagged item's row is empty.

    Raises:
        DataValidationError: bad header or list (from the reader), duplicated or foreign ``video_id``s,
            or a tag outside 0..30.
    """
    frame = read_item_categories(path)
    video = frame["video_id"].to_numpy(dtype=np.int64)  # (n_file,)
    check_unique(path, "video_id", video, "video")
    file_rows = internal_index(data.item_ids, video)  # (n_file,)
    check_overlap(path, "video_id", video, file_rows, data.name)
    exploded = frame["feat"].explode()  # one entry per (video, tag); an empty list gives one NaN
    owner = exploded.index.to_numpy(dtype=np.int64)
    tags = pd.to_numeric(exploded, errors="coerce").to_numpy(dtype=np.float64)
    listed = np.isfinite(tags)
    owner, tags = owner[listed], tags[listed].astype(np.int64)
    outside = (tags < 0) | (tags >= N_TAGS)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DataValidationError(
            f"{path}: column 'feat' has {int(outside.sum()):,} tag(s) outside 0..{N_TAGS - 1} (first "
            f"{tags[first]} of video {video[owner[first]]}); expected KuaiRec's {N_TAGS} tags 0..{N_TAGS - 1}"
        )
    rows = file_rows[owner]  # (n_pairs,)
    keep = rows > 0
    n_rows = data.num_items + 1
    matrix = sp.coo_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], tags[keep])), shape=(n_rows, N_TAGS)
    )
    values = canonical_csr(matrix, (n_rows, N_TAGS))  # (n_items + 1, 31)
    values.data[:] = 1.0  # a tag listed twice is still one tag
    return item_group(
        data,
        name="tags",
        kind="multi_hot",
        source=SOURCE,
        columns=tuple(f"tag_{tag}" for tag in range(N_TAGS)),
        values=values,
        notes="feat list literal -> multi-hot over tags 0..30; no tags = empty row",
    )
