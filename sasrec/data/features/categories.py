"""Category levels and topic tags of ``kuairec_caption_category.csv``.

* ``categories``: first-, second- and third-level category ids as categorical ids (0 = unknown: KuaiRec's
  ``-124`` sentinel, a missing value, or a video the file does not describe);
* ``topics``: the topic-tag list (``[tag,tag]``, unquoted) as a multi-hot matrix over the tags that occur
  in at least ``min_videos`` videos of the file; column 0 collects the rarer tags.

Vocabularies are built from the whole file, not from the dataset's videos, so that one category has the
same id in every dataset prepared from KuaiRec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sasrec.data.contracts import PreparedData
from sasrec.data.features.alignment import UNKNOWN_CATEGORY_ID, categorical_codes, scatter_rows
from sasrec.data.features.table import FeatureGroup, canonical_csr, item_group
from sasrec.errors import DataValidationError

SOURCE = "kuairec_caption_category.csv"
CATEGORY_COLUMNS = ("first_level_category_id", "second_level_category_id", "third_level_category_id")
RARE_TOPIC = "<rare>"


def category_group(
    path: Path, frame: pd.DataFrame, file_rows: np.ndarray, data: PreparedData
) -> FeatureGroup:
    """Categorical ids of the three category levels: (num_items + 1, 3) int32, 0 = unknown.

    Args:
        path: the captions file (for messages).
        frame: its rows, as :func:`sasrec.data.kuairec.readers.read_captions` returns them.
        file_rows: (n_file,) internal item index of each row (0: not in the dataset).
        data: the prepared dataset.
    """
    n_rows = data.num_items + 1
    columns, vocabularies = [], {}
    for name in CATEGORY_COLUMNS:  # three columns, not rows
        ids = pd.to_numeric(frame[name], errors="coerce")
        codes, vocabulary = categorical_codes(ids, unknown=(ids < 0).to_numpy(dtype=bool, na_value=False))
        columns.append(codes)
        vocabularies[name] = vocabulary
    values = scatter_rows(file_rows, np.stack(columns, axis=1), n_rows)  # (n_items + 1, 3)
    return item_group(
        data,
        name="categories",
        kind="categorical",
        source=SOURCE,
        columns=CATEGORY_COLUMNS,
        values=values,
        vocabularies=vocabularies,
        notes=f"category ids -> 1..V in id order over the whole file; {UNKNOWN_CATEGORY_ID} or missing -> 0",
    )


def _topic_pairs(path: Path, topics: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(file row, topic string) of every listed topic; rows without topics contribute nothing."""
    text = topics.reset_index(drop=True).astype("string").str.strip()
    malformed = ~text.str.fullmatch(r"\[.*\]").fillna(True).astype(bool)
    if malformed.any():
        first = int(np.flatnonzero(malformed.to_numpy())[0])
        raise DataValidationError(
            f"{path}: column 'topic_tag' has {int(malformed.sum()):,} value(s) that are not a bracketed list "
            f"(first at data row {first + 1:,}: {text.iloc[first]!r}); expected a list such as [tag,tag] or []"
        )
    pieces = text.str.slice(1, -1).str.split(",").explode().str.strip()  # (n_pairs,)
    keep = pieces.notna() & (pieces.str.len() > 0)
    pieces = pieces[keep]
    return pieces.index.to_numpy(dtype=np.int64), pieces.to_numpy(dtype=object)


def topic_group(
    path: Path, frame: pd.DataFrame, file_rows: np.ndarray, data: PreparedData, min_videos: int = 5
) -> FeatureGroup:
    """Multi-hot topic tags: (num_items + 1, 1 + T) CSR over the T tags of at least ``min_videos`` videos.

    Column 0 (``<rare>``) marks a video with at least one rarer tag; a video without topics has an empty row.
    """
    owner, topics = _topic_pairs(path, frame["topic_tag"])
    pairs = pd.DataFrame({"row": owner, "topic": topics}).drop_duplicates()
    videos_per_topic = pairs["topic"].value_counts()
    frequent = videos_per_topic.index[videos_per_topic.to_numpy() >= max(int(min_videos), 1)]
    vocabulary = np.sort(frequent.to_numpy(dtype=str))  # (T,) code-point order
    listed = pairs["topic"].to_numpy(dtype=str)  # (n_pairs,)
    if len(vocabulary):
        position = np.minimum(np.searchsorted(vocabulary, listed), len(vocabulary) - 1)
        column = np.where(vocabulary[position] == listed, position + 1, 0)
    else:
        column = np.zeros(len(listed), dtype=np.int64)
    rows = file_rows[pairs["row"].to_numpy(dtype=np.int64)]
    keep = rows > 0
    n_rows, width = data.num_items + 1, len(vocabulary) + 1
    values = canonical_csr(
        sp.coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], column[keep])), shape=(n_rows, width)
        ),
        (n_rows, width),
    )
    values.data[:] = 1.0  # several rare tags count once in column 0
    return item_group(
        data,
        name="topics",
        kind="multi_hot",
        source=SOURCE,
        columns=(RARE_TOPIC, *vocabulary.tolist()),
        values=values,
        notes=f"topic_tag list -> multi-hot over tags of >= {min_videos} videos of the file; column 0 = rarer tags",
    )
