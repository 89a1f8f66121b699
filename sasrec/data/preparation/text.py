"""The SASRec text format (``user item [liked]`` per line, in time order): reader and writers."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sasrec.data.contracts import (
    PreparedData,
)
from sasrec.data.preparation.params import NO_REMAPPING_SUFFIX
from sasrec.errors import DataValidationError, MissingDataError

_TEXT_LINE_PATTERN = r"^[0-9]+[ \t]+[0-9]+([ \t]+[0-9]+)?$"


# ------------------------------------------------------------------------------------------ text files
def read_sasrec_text(path: Path) -> pd.DataFrame:
    """Read a SASRec-format file: ``user item`` or ``user item liked`` per line, lines in time order.

    The format of Kang & McAuley's SASRec code (and the original project's text files). Blank lines are
    skipped. Returns columns ``user_id``, ``video_id`` (int64), ``liked`` (bool; True when the file has
    two columns) and ``order`` (1-based line number, the time order within each user).

    Raises:
        MissingDataError: the file does not exist.
        DataValidationError: a line is not 2 or 3 non-negative integers, the column count changes, or
            ``liked`` is not 0 or 1; the message names the file, the line number and its content.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"SASRec text file {path} does not exist")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["line"]),
            parse_options=pacsv.ParseOptions(
                delimiter="\x1f",
                quote_char=False,
                escape_char=False,
                double_quote=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"line": pa.string()}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataValidationError(
            f"{path}: not a SASRec text file (expected UTF-8 lines of 2 or 3 integers): {exc}"
        ) from None
    lines = pc.utf8_trim_whitespace(table["line"])
    line_numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    keep = np.asarray(pc.not_equal(lines, "").to_numpy(zero_copy_only=False), dtype=bool)
    lines = lines.filter(pa.array(keep))
    line_numbers = line_numbers[keep]
    if len(lines) == 0:
        raise DataValidationError(f"{path}: no interactions (the file is empty or holds only blank lines)")

    def fail(bad: np.ndarray, what: str) -> NoReturn:
        first = int(np.flatnonzero(bad)[0])
        content = lines[first].as_py()
        raise DataValidationError(
            f"{path}: line {int(line_numbers[first])}: {content!r}: {what} "
            f"({int(bad.sum())} such line(s) of {len(bad)})"
        )

    well_formed = np.asarray(
        pc.match_substring_regex(lines, _TEXT_LINE_PATTERN).to_numpy(zero_copy_only=False)
    )
    if not well_formed.all():
        fail(
            ~well_formed,
            "expected 'user item' or 'user item liked', non-negative integers separated by spaces",
        )
    fields = pc.split_pattern_regex(lines, r"[ \t]+")
    n_fields = np.asarray(pc.list_value_length(fields).to_numpy(zero_copy_only=False), dtype=np.int64)
    width = int(n_fields[0])
    if (n_fields != width).any():
        fail(n_fields != width, f"has {3 if width == 2 else 2} columns but the file's first line has {width}")
    flat_text = pc.list_flatten(fields)
    field_length = np.asarray(pc.utf8_length(flat_text).to_numpy(zero_copy_only=False)).reshape(-1, width)
    too_long = (field_length > 18).any(axis=1)
    if too_long.any():
        fail(too_long, "an id has more than 18 digits")
    values = pc.cast(flat_text, pa.int64()).to_numpy().reshape(-1, width)
    if width == 3:
        liked_raw = values[:, 2]
        bad_liked = (liked_raw != 0) & (liked_raw != 1)
        if bad_liked.any():
            fail(bad_liked, "the third column (liked) must be 0 or 1")
        liked = liked_raw.astype(bool)
    else:
        liked = np.ones(len(values), dtype=bool)
    return pd.DataFrame(
        {"user_id": values[:, 0], "video_id": values[:, 1], "liked": liked, "order": line_numbers}
    )


# ------------------------------------------------------------------------------------------ artifacts
def _sasrec_text_table(users: np.ndarray, items: np.ndarray, liked: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "user": pa.array(users, type=pa.int64()),
            "item": pa.array(items, type=pa.int64()),
            "liked": pa.array(liked.astype(np.int8), type=pa.int8()),
        }
    )


def _write_text_files(data: PreparedData, folder: Path, base: str) -> dict[str, str]:
    """The original project's files: ``<base>.txt`` (contiguous ids) and ``<base>_no_remapping.txt``."""
    users = data.events["user"].to_numpy()
    items = data.events["item"].to_numpy()
    liked = data.events["liked"].to_numpy()
    if data.meta.get("remap", True):
        remapped_users, remapped_items = users, items
    else:  # contiguous ranks of the present ids, as the remapped dataset would number them
        rank_of_user = np.cumsum(
            np.bincount(users, minlength=data.num_users + 1)
            + np.bincount(data.labels["user"], minlength=data.num_users + 1)
            > 0
        )
        rank_of_item = np.cumsum(
            np.bincount(items, minlength=data.num_items + 1)
            + np.bincount(data.labels["item"], minlength=data.num_items + 1)
            > 0
        )
        remapped_users, remapped_items = rank_of_user[users], rank_of_item[items]
    options = pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    written = {}
    for filename, u, i in (
        (f"{base}.txt", remapped_users, remapped_items),
        (f"{base}{NO_REMAPPING_SUFFIX}.txt", data.user_ids[users], data.item_ids[items]),
    ):
        pacsv.write_csv(_sasrec_text_table(u, i, liked), folder / filename, write_options=options)
        written[filename] = filename
    return written
