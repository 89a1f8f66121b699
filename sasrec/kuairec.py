"""KuaiRec 2.0 files: schemas, validated pyarrow readers, cleaning with a report, and a parquet cache.

The dataset is described in Gao et al., "KuaiRec: A Fully-Observed Dataset and Insights for Evaluating
Recommender Systems" (CIKM 2022). Every reader checks the header and the values and raises
:class:`sasrec.errors.DataValidationError` naming the file, the column, how many rows are bad, one example
row with its line number and what was expected; a raw pyarrow error never escapes for bad input.

``python -m sasrec validate DIR`` checks every official file found in DIR.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from sasrec import paths
from sasrec.errors import DataValidationError, MissingDataError

INTERACTION_FILES = ("big_matrix.csv", "small_matrix.csv")
INTERACTION_COLUMNS = [
    "user_id",
    "video_id",
    "play_duration",
    "video_duration",
    "time",
    "date",
    "timestamp",
    "watch_ratio",
]
#: Folders below a data directory where the official files may sit (the archive unpacks to the last one).
SEARCH_SUBDIRS: tuple[tuple[str, ...], ...] = ((), ("data",), ("KuaiRec 2.0", "data"))
#: The timezone of KuaiRec's ``time`` and ``date`` columns.
LOCAL_TIMEZONE = "Asia/Shanghai"
#: Bump when the cached table layout changes, so that old caches are rebuilt.
CACHE_FORMAT_VERSION = 1

_FINGERPRINT_BLOCK = 1 << 20  # 1 MiB
_INT32_MAX = np.iinfo(np.int32).max
_CR_PLACEHOLDER = "\ue000"  # private-use character standing in for a bare carriage return while parsing
_INT_PATTERN = r"^\s*[+-]?\d+\s*$"
_FLOAT_PATTERN = (
    r"(?i)^\s*[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan|-nan|1\.#ind|1\.#qnan)\s*$"
)
_INT_LIST_PATTERN = r"^\s*\[\s*(\d+\s*(,\s*\d+\s*)*)?\]\s*$"


# --------------------------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class FileSchema:
    """Schema of one official KuaiRec file.

    Attributes:
        name: file name inside ``KuaiRec 2.0/data/``.
        columns: (column, pyarrow type used to parse the CSV) in the official order.
        expected_rows: official number of data rows (header excluded).
        rows_exact: whether ``expected_rows`` is the published count (False: an approximate count).
        id_columns: integer ids that may not be missing or negative.
        non_negative: numeric columns that may not be negative (missing values allowed unless required).
        required: columns that may not be missing.
        finite: float columns that must be finite (neither NaN, missing nor infinite).
        int_lists: string columns holding a list literal of non-negative integers such as ``[27, 9]``.
        multiline: quoted fields may hold newlines (line numbers in messages become data-row numbers).
        description: one line for ``validate``'s output.
    """

    name: str
    columns: tuple[tuple[str, pa.DataType], ...]
    expected_rows: int | None
    rows_exact: bool = True
    id_columns: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    finite: tuple[str, ...] = ()
    int_lists: tuple[str, ...] = ()
    multiline: bool = False
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        """Column names in the official order."""
        return [name for name, _ in self.columns]

    @property
    def column_types(self) -> dict[str, pa.DataType]:
        """Mapping column -> pyarrow parse type."""
        return dict(self.columns)


_INTERACTION_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("user_id", pa.int64()),
    ("video_id", pa.int64()),
    ("play_duration", pa.int64()),
    ("video_duration", pa.int64()),
    ("time", pa.string()),
    ("date", pa.float64()),
    ("timestamp", pa.float64()),
    ("watch_ratio", pa.float64()),
)


def _interaction_schema(name: str, rows: int, what: str) -> FileSchema:
    return FileSchema(
        name=name,
        columns=_INTERACTION_TYPES,
        expected_rows=rows,
        id_columns=("user_id", "video_id"),
        non_negative=("play_duration", "video_duration"),
        required=("play_duration", "video_duration", "watch_ratio"),
        finite=("watch_ratio",),
        description=what,
    )


_USER_RANGE_COLUMNS = (
    "user_active_degree",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)
_USER_FEATURE_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("user_id", pa.int64()),
    ("user_active_degree", pa.string()),
    ("is_lowactive_period", pa.int64()),
    ("is_live_streamer", pa.int64()),
    ("is_video_author", pa.int64()),
    ("follow_user_num", pa.int64()),
    ("follow_user_num_range", pa.string()),
    ("fans_user_num", pa.int64()),
    ("fans_user_num_range", pa.string()),
    ("friend_user_num", pa.int64()),
    ("friend_user_num_range", pa.string()),
    ("register_days", pa.int64()),
    ("register_days_range", pa.string()),
    *((f"onehot_feat{i}", pa.int64()) for i in range(18)),
)

_CAPTION_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("video_id", pa.int64()),
    ("manual_cover_text", pa.string()),
    ("caption", pa.string()),
    ("topic_tag", pa.string()),
    ("first_level_category_id", pa.int64()),
    ("first_level_category_name", pa.string()),
    ("second_level_category_id", pa.int64()),
    ("second_level_category_name", pa.string()),
    ("third_level_category_id", pa.int64()),
    ("third_level_category_name", pa.string()),
)

_DAILY_STRING_COLUMNS = ("video_type", "upload_dt", "upload_type", "visible_status", "video_tag_name")
_DAILY_COLUMNS = (
    "video_id date author_id video_type upload_dt upload_type visible_status video_duration video_width "
    "video_height music_id video_tag_id video_tag_name show_cnt show_user_num play_cnt play_user_num "
    "play_duration complete_play_cnt complete_play_user_num valid_play_cnt valid_play_user_num "
    "long_time_play_cnt long_time_play_user_num short_time_play_cnt short_time_play_user_num play_progress "
    "comment_stay_duration like_cnt like_user_num click_like_cnt double_click_cnt cancel_like_cnt "
    "cancel_like_user_num comment_cnt comment_user_num direct_comment_cnt reply_comment_cnt "
    "delete_comment_cnt delete_comment_user_num comment_like_cnt comment_like_user_num follow_cnt "
    "follow_user_num cancel_follow_cnt cancel_follow_user_num share_cnt share_user_num download_cnt "
    "download_user_num report_cnt report_user_num reduce_similar_cnt reduce_similar_user_num collect_cnt "
    "collect_user_num cancel_collect_cnt cancel_collect_user_num"
).split()
_DAILY_TYPES: tuple[tuple[str, pa.DataType], ...] = tuple(
    (
        name,
        pa.int64()
        if name in ("video_id", "date", "author_id")
        else pa.string()
        if name in _DAILY_STRING_COLUMNS
        else pa.float64(),
    )
    for name in _DAILY_COLUMNS
)

#: Every official file of the KuaiRec 2.0 archive (row counts from the dataset's release; see KUAIREC.md).
OFFICIAL_FILES: dict[str, FileSchema] = {
    schema.name: schema
    for schema in (
        _interaction_schema(
            "big_matrix.csv", 12_530_806, "training interactions (7,176 users, 10,728 videos)"
        ),
        _interaction_schema(
            "small_matrix.csv", 4_676_570, "fully observed matrix (1,411 users, 3,327 videos)"
        ),
        FileSchema(
            name="item_categories.csv",
            columns=(("video_id", pa.int64()), ("feat", pa.string())),
            expected_rows=10_728,
            id_columns=("video_id",),
            required=("feat",),
            int_lists=("feat",),
            description="tags of each video (31 tags, 1-4 per video)",
        ),
        FileSchema(
            name="user_features.csv",
            columns=_USER_FEATURE_TYPES,
            expected_rows=7_176,
            id_columns=("user_id",),
            non_negative=(
                "is_lowactive_period",
                "is_live_streamer",
                "is_video_author",
                "follow_user_num",
                "fans_user_num",
                "friend_user_num",
                "register_days",
                *(f"onehot_feat{i}" for i in range(18)),
            ),
            required=(
                "is_lowactive_period",
                "is_live_streamer",
                "is_video_author",
                "follow_user_num",
                "fans_user_num",
                "friend_user_num",
                "register_days",
                *_USER_RANGE_COLUMNS,
            ),
            description="user profile features (31 columns)",
        ),
        FileSchema(
            name="kuairec_caption_category.csv",
            columns=_CAPTION_TYPES,
            expected_rows=10_728,
            id_columns=("video_id",),
            multiline=True,
            description="captions and category hierarchy of each video",
        ),
        FileSchema(
            name="item_daily_features.csv",
            columns=_DAILY_TYPES,
            # Not among the counts KUAIREC.md lists (one row per video and day): a mismatch never fails.
            expected_rows=343_341,
            rows_exact=False,
            id_columns=("video_id", "date", "author_id"),
            description="daily statistics of each video",
        ),
        FileSchema(
            name="social_network.csv",
            columns=(("user_id", pa.int64()), ("friend_list", pa.string())),
            expected_rows=472,
            id_columns=("user_id",),
            required=("friend_list",),
            int_lists=("friend_list",),
            description="friend lists of the users who have friends",
        ),
    )
}


# ------------------------------------------------------------------------------------- cleaning report
@dataclass
class CleaningReport:
    """What :func:`clean_interactions` dropped and flagged (counts of rows)."""

    source: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)

    _NOTES = {
        "exact_duplicate_rows": "all 8 columns equal to an earlier row",
        "untimed_rows_labels_only": "kept: no timestamp, labels only, excluded from sequences",
        "repeat_views": "kept: (user, video) seen earlier, counted as events",
        "date_disagrees_with_timestamp": f"kept: date differs from the timestamp's {LOCAL_TIMEZONE} day",
    }

    def to_frame(self) -> pd.DataFrame:
        """One row per count: columns kind (input/dropped/flagged/output), name, rows, percent, note."""
        records: list[tuple[str, str, int]] = [("input", "rows_in", self.rows_in)]
        records += [("dropped", name, count) for name, count in self.dropped.items()]
        records += [("flagged", name, count) for name, count in self.flagged.items()]
        records.append(("output", "rows_out", self.rows_out))
        frame = pd.DataFrame(records, columns=["kind", "name", "rows"])
        frame["percent"] = 100.0 * frame["rows"] / max(self.rows_in, 1)
        frame["note"] = frame["name"].map(self._NOTES).fillna("")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "source": self.source,
            "rows_in": int(self.rows_in),
            "rows_out": int(self.rows_out),
            "dropped": {k: int(v) for k, v in self.dropped.items()},
            "flagged": {k: int(v) for k, v in self.flagged.items()},
        }

    def __str__(self) -> str:
        frame = self.to_frame()
        width = max(len(name) for name in frame["name"])
        lines = [f"cleaning report for {self.source}"]
        for kind, name, rows, percent, note in frame.itertuples(index=False):
            note_text = f"  ({note})" if note else ""
            lines.append(f"  {kind:<8} {name:<{width}} {rows:>12,} {percent:7.2f}%{note_text}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- file discovery
def find_file(data_dir: Path, file_name: str) -> Path | None:
    """Return ``file_name`` under ``data_dir``, ``data_dir/data`` or ``data_dir/KuaiRec 2.0/data``, else None."""
    base = Path(data_dir)
    for parts in SEARCH_SUBDIRS:
        candidate = base.joinpath(*parts, file_name)
        if candidate.is_file():
            return candidate
    return None


def has_official_matrices(data_dir: Path) -> bool:
    """Whether both interaction matrices are present under ``data_dir`` (see :func:`find_file`)."""
    return all(find_file(data_dir, name) is not None for name in INTERACTION_FILES)


def source_fingerprint(path: Path) -> str:
    """Cheap fingerprint of a file: size, mtime_ns and a blake2b digest of its first and last MiB."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        digest.update(handle.read(_FINGERPRINT_BLOCK))
        if stat.st_size > _FINGERPRINT_BLOCK:
            handle.seek(max(stat.st_size - _FINGERPRINT_BLOCK, _FINGERPRINT_BLOCK))
            digest.update(handle.read(_FINGERPRINT_BLOCK))
    return f"{stat.st_size}-{stat.st_mtime_ns}-{digest.hexdigest()}"


# --------------------------------------------------------------------------------- validated CSV read
def _schema_for(path: Path, default: FileSchema | None = None) -> FileSchema:
    schema = OFFICIAL_FILES.get(path.name, default)
    if schema is None:
        raise DataValidationError(f"{path}: not an official KuaiRec file name ({', '.join(OFFICIAL_FILES)})")
    return schema


def _read_header(path: Path) -> list[str]:
    """Column names of the first line (a UTF-8 byte-order mark is tolerated)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    text = head.decode("utf-8-sig", errors="replace")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if not first_line.strip():
        raise DataValidationError(f"{path}: empty file or empty header line; expected a CSV header row")
    return [name.strip() for name in next(csv.reader([first_line]))]


def check_header(path: Path, schema: FileSchema) -> list[str]:
    """Check that the header holds exactly the schema's columns (any order); return the header."""
    header = _read_header(path)
    expected = schema.column_names
    duplicated = sorted({name for name in header if header.count(name) > 1})
    missing = [name for name in expected if name not in header]
    extra = [name for name in header if name not in expected]
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"extra column(s) {extra}")
    if duplicated:
        problems.append(f"duplicated column(s) {duplicated}")
    if problems:
        raise DataValidationError(
            f"{path}: {'; '.join(problems)} in header {header}; expected exactly the columns {expected}"
        )
    return header


def count_csv_rows(path: Path, schema: FileSchema | None = None) -> int:
    """Number of data rows (header excluded) of a CSV, fast.

    Files without multi-line values are counted by a buffered newline count (about 1 GB/s); files whose
    quoted fields may hold newlines (the captions file) are parsed by pyarrow.
    """
    path = Path(path)
    schema = schema or OFFICIAL_FILES.get(path.name)
    if schema is not None and schema.multiline:
        header = check_header(path, schema)
        as_strings = {name: pa.string() for name in header}
        try:
            return _pyarrow_read(path, schema, header, as_strings).num_rows
        except pa.ArrowInvalid as exc:
            raise DataValidationError(f"{path}: could not be parsed as CSV: {exc}") from None
    newlines = 0
    last = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            newlines += block.count(b"\n")
            last = block[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


def _row_location(schema: FileSchema, index: int) -> str:
    if schema.multiline:
        return f"data row {index + 1:,}"
    return f"line {index + 2:,}"


def _example_row(table: pa.Table, index: int) -> str:
    row = table.slice(index, 1).to_pylist()[0]
    return json.dumps(row, ensure_ascii=False, default=str)


def _value_error(
    path: Path, schema: FileSchema, table: pa.Table, column: str, bad: np.ndarray, problem: str, expected: str
) -> DataValidationError:
    """Build the message for the rows of ``bad`` (boolean mask) in ``column``."""
    positions = np.flatnonzero(bad)
    first = int(positions[0])
    return DataValidationError(
        f"{path}: column '{column}' has {positions.size:,} of {table.num_rows:,} rows with {problem}; "
        f"first at {_row_location(schema, first)}: {_example_row(table, first)}; expected {expected}"
    )


def _csv_source(path: Path, schema: FileSchema) -> Any:
    """What pyarrow reads: the path, or for multi-line text files the bytes with bare CRs protected.

    KuaiRec's caption file holds carriage returns inside unquoted fields; any CSV reader would end the row
    there. Only ``\\n`` ends a row in these files, so bare ``\\r`` are swapped for a placeholder and restored
    after parsing.
    """
    if not schema.multiline:
        return path
    data = path.read_bytes()
    if b"\r" not in data:
        return pa.BufferReader(data)
    placeholder = _CR_PLACEHOLDER.encode()
    if placeholder in data:
        raise DataValidationError(f"{path}: holds the reserved character U+E000; expected ordinary text")
    data = re.sub(rb"\r(?!\n)", placeholder, data)
    return pa.BufferReader(data)


def _restore_carriage_returns(table: pa.Table) -> pa.Table:
    for index, name in enumerate(table.column_names):
        column = table.column(name)
        if pa.types.is_string(column.type):
            restored = pc.replace_substring(column, _CR_PLACEHOLDER, "\r")
            table = table.set_column(index, name, restored)
    return table


def _pyarrow_read(
    path: Path, schema: FileSchema, header: list[str], types: dict[str, pa.DataType]
) -> pa.Table:
    return pv.read_csv(
        _csv_source(path, schema),
        read_options=pv.ReadOptions(skip_rows=1, column_names=header, block_size=1 << 24),
        parse_options=pv.ParseOptions(newlines_in_values=schema.multiline),
        convert_options=pv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )


def _locate_unparsable(path: Path, schema: FileSchema, header: list[str], arrow_message: str) -> None:
    """Re-read the numeric columns as strings and raise on the first one holding unparsable values."""
    numeric = {name: typ for name, typ in schema.columns if not pa.types.is_string(typ)}
    as_strings = {name: pa.string() for name in header}
    try:
        table = _pyarrow_read(path, schema, header, as_strings)
    except pa.ArrowInvalid as exc:
        raise DataValidationError(f"{path}: could not be parsed as CSV: {exc}") from None
    if schema.multiline:
        table = _restore_carriage_returns(table)
    for name, typ in schema.columns:
        if name not in numeric:
            continue
        values = table.column(name)
        pattern = _INT_PATTERN if pa.types.is_integer(typ) else _FLOAT_PATTERN
        matches = pc.match_substring_regex(values, pattern)
        bad = pc.fill_null(pc.invert(matches), False).to_numpy(zero_copy_only=False)
        if bad.any():
            kind = "integer" if pa.types.is_integer(typ) else "number"
            raise _value_error(
                path, schema, table, name, bad, f"values that are not {kind}s", f"{kind}s only"
            )
    raise DataValidationError(f"{path}: a value could not be converted: {arrow_message}")


def read_validated_table(path: Path, schema: FileSchema | None = None) -> pa.Table:
    """Parse ``path`` with pyarrow using the official schema and check its values.

    Args:
        path: the CSV file.
        schema: the schema to apply; default the official one for the file's name.

    Returns:
        A pyarrow table with the columns in the official order and ids cast to int32.

    Raises:
        MissingDataError: the file does not exist.
        DataValidationError: header, parsing or a value check failed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path} does not exist")
    schema = schema or _schema_for(path)
    header = check_header(path, schema)
    try:
        table = _pyarrow_read(path, schema, header, schema.column_types)
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "CSV parse error" in message:
            raise DataValidationError(
                f"{path}: malformed CSV row: {message}; expected {len(header)} comma-separated fields per row"
            ) from None
        _locate_unparsable(path, schema, header, message)
        raise AssertionError("unreachable") from None
    table = table.select(schema.column_names)
    if schema.multiline:
        table = _restore_carriage_returns(table)
    _check_values(path, schema, table)
    return _cast_ids(table, schema)


def _check_values(path: Path, schema: FileSchema, table: pa.Table) -> None:
    """Raise on missing ids, negative values, non-finite floats and malformed integer lists."""
    for name in schema.id_columns:
        column = table.column(name)
        if column.null_count:
            bad = column.is_null().to_numpy(zero_copy_only=False)
            raise _value_error(path, schema, table, name, bad, "a missing id", "an integer id on every row")
        values = column.to_numpy()
        if (values < 0).any():
            raise _value_error(path, schema, table, name, values < 0, "a negative id", "ids >= 0")
        if (values > _INT32_MAX).any():
            raise _value_error(
                path, schema, table, name, values > _INT32_MAX, "an id above 2^31-1", "ids that fit in int32"
            )
    for name in schema.required:
        column = table.column(name)
        if column.null_count:
            bad = column.is_null().to_numpy(zero_copy_only=False)
            raise _value_error(path, schema, table, name, bad, "a missing value", "a value on every row")
    for name in schema.non_negative:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = values < 0  # NaN compares False
        if bad.any():
            raise _value_error(path, schema, table, name, bad, "a negative value", "values >= 0")
    for name in schema.finite:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise _value_error(
                path, schema, table, name, bad, "a non-finite value (NaN, missing or inf)", "a finite number"
            )
    for name in schema.int_lists:
        matches = pc.match_substring_regex(table.column(name), _INT_LIST_PATTERN)
        bad = pc.fill_null(pc.invert(matches), True).to_numpy(zero_copy_only=False)
        if bad.any():
            raise _value_error(
                path,
                schema,
                table,
                name,
                bad,
                "a malformed list",
                "a list literal of integers such as [27, 9]",
            )


def _cast_ids(table: pa.Table, schema: FileSchema) -> pa.Table:
    for name in schema.id_columns:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.cast(table.column(name), pa.int32()))
    return table


def _parse_int_lists(column: pa.ChunkedArray) -> list[list[int]]:
    """Parse list literals such as ``[27, 9]`` (already validated) with pyarrow string kernels."""
    inner = pc.replace_substring_regex(column, r"[\[\]\s]", "")
    pieces = pc.split_pattern(inner, ",").combine_chunks()  # list<string>
    flat = pieces.flatten()
    keep = pc.not_equal(pc.utf8_length(flat), 0)
    lengths = pc.list_value_length(pieces).to_numpy(zero_copy_only=False)
    # "[]" splits into [""]: drop empty pieces and shrink each list accordingly.
    owner = np.repeat(np.arange(len(pieces)), lengths)
    keep_np = keep.to_numpy(zero_copy_only=False)
    counts = np.bincount(owner[keep_np], minlength=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pc.cast(pc.filter(flat, keep), pa.int64())
    return pa.ListArray.from_arrays(pa.array(offsets), values).to_pylist()


def _string_dtype_mapper(arrow_type: pa.DataType) -> Any:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_string_dtype_mapper)


# ----------------------------------------------------------------------------------------- interactions
def _interactions_frame(table: pa.Table) -> pd.DataFrame:
    frame = _to_pandas(table)
    return frame[INTERACTION_COLUMNS]


def _cache_paths(path: Path, cache_dir: Path) -> tuple[Path, Path]:
    key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=8).hexdigest()
    stem = f"{path.stem}-{key}"
    return cache_dir / f"{stem}.parquet", cache_dir / f"{stem}.json"


def default_cache_dir() -> Path:
    """Where parsed tables are cached: ``data/processed/cache``."""
    return paths.processed_dir() / "cache"


def _read_cache(parquet_path: Path, sidecar_path: Path, fingerprint: str) -> pa.Table | None:
    if not (parquet_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if meta.get("source_fingerprint") != fingerprint or meta.get("format") != CACHE_FORMAT_VERSION:
            return None
        table = pq.read_table(parquet_path)
    except (OSError, ValueError, pa.ArrowException):
        return None
    if table.column_names != INTERACTION_COLUMNS or table.num_rows != meta.get("rows"):
        return None
    return table


def _write_cache(
    table: pa.Table, parquet_path: Path, sidecar_path: Path, source: Path, fingerprint: str
) -> None:
    try:
        with paths.atomic_path(parquet_path) as tmp:
            pq.write_table(table, tmp, compression="lz4")
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "source": str(source.resolve()),
            "source_fingerprint": fingerprint,
            "rows": table.num_rows,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        paths.atomic_write_text(sidecar_path, json.dumps(meta, indent=2) + "\n")
    except OSError as exc:
        warnings.warn(f"could not write the parquet cache {parquet_path}: {exc}", stacklevel=3)


def read_interactions(path: Path, *, cache: bool = True, cache_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate an interaction matrix (``big_matrix.csv`` / ``small_matrix.csv`` schema).

    The validated, uncleaned table is cached as parquet under ``cache_dir`` (default
    ``data/processed/cache``), keyed by the source path; the sidecar JSON holds the source's
    :func:`source_fingerprint` and the cache is rebuilt when the source changes.

    Returns:
        Columns :data:`INTERACTION_COLUMNS`: user_id, video_id int32; play_duration, video_duration int64;
        time string (nullable, Asia/Shanghai text); date float64 (yyyymmdd, NaN allowed); timestamp
        float64 (Unix seconds, NaN allowed); watch_ratio float64.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"interaction file {path} does not exist")
    schema = OFFICIAL_FILES.get(path.name, OFFICIAL_FILES["big_matrix.csv"])
    if schema.column_names != INTERACTION_COLUMNS:
        schema = OFFICIAL_FILES["big_matrix.csv"]
    if not cache:
        return _interactions_frame(read_validated_table(path, schema))
    parquet_path, sidecar_path = _cache_paths(path, Path(cache_dir) if cache_dir else default_cache_dir())
    fingerprint = source_fingerprint(path)
    table = _read_cache(parquet_path, sidecar_path, fingerprint)
    if table is None:
        table = read_validated_table(path, schema)
        _write_cache(table, parquet_path, sidecar_path, path, fingerprint)
    return _interactions_frame(table)


def _local_yyyymmdd(timestamp: np.ndarray) -> np.ndarray:
    """yyyymmdd (float64) of Unix seconds in Asia/Shanghai.

    The zone's UTC offset is looked up once per hour of the covered span (offsets change on hour
    boundaries), which is exact and much faster than converting every timestamp with pandas.
    """
    if timestamp.size == 0:
        return np.empty(0, dtype=np.float64)
    hours = np.floor(timestamp / 3600.0).astype(np.int64)
    first, last = int(hours.min()), int(hours.max())
    if last - first <= 1_000_000:  # up to about 114 years of hourly offsets
        grid = pd.to_datetime(np.arange(first, last + 1, dtype=np.int64) * 3600, unit="s", utc=True)
        local_grid = grid.tz_convert(LOCAL_TIMEZONE).tz_localize(None)
        offset = (local_grid - grid.tz_localize(None)).total_seconds().to_numpy()  # (hours,)
        local_seconds = timestamp + offset[hours - first]
    else:
        local = pd.to_datetime(timestamp, unit="s", utc=True).tz_convert(LOCAL_TIMEZONE).tz_localize(None)
        local_seconds = (local - pd.Timestamp(0)).total_seconds().to_numpy()
    days = np.floor(local_seconds / 86_400.0).astype(np.int64)
    first_day = int(days.min())
    calendar = pd.to_datetime(np.arange(first_day, int(days.max()) + 1), unit="D")  # one entry per day
    yyyymmdd = (calendar.year * 10_000 + calendar.month * 100 + calendar.day).to_numpy(dtype=np.float64)
    return yyyymmdd[days - first_day]


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 values (a well-spread hash)."""
    mixed = values ^ (values >> np.uint64(30))
    mixed = mixed * np.uint64(0xBF58476D1CE4E5B9)
    mixed = mixed ^ (mixed >> np.uint64(27))
    mixed = mixed * np.uint64(0x94D049BB133111EB)
    return mixed ^ (mixed >> np.uint64(31))


def _as_uint64(column: pd.Series) -> np.ndarray:
    """Bits of a numeric column as uint64, with every NaN and both zeros made identical."""
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0
        values[np.isnan(values)] = np.nan
        return values.view(np.uint64)
    return column.to_numpy(dtype=np.int64).view(np.uint64)


def _in_repeated_group(keys: np.ndarray) -> np.ndarray:
    """Mask of the rows whose key occurs more than once (sort based)."""
    order = np.argsort(keys)
    ordered = keys[order]
    same_as_next = ordered[1:] == ordered[:-1]
    repeated_sorted = np.zeros(keys.size, dtype=bool)
    repeated_sorted[1:] |= same_as_next
    repeated_sorted[:-1] |= same_as_next
    repeated = np.empty(keys.size, dtype=bool)
    repeated[order] = repeated_sorted
    return repeated


def exact_duplicates(
    df: pd.DataFrame, columns: list[str], bucket_columns: list[str] | None = None
) -> np.ndarray:
    """Mask of rows equal on ``columns`` to an earlier row (the same as ``df.duplicated(columns)``).

    Rows are first bucketed by a 64-bit hash of ``bucket_columns`` (numeric columns among ``columns``;
    default all numeric ones); only rows whose hash repeats (a few percent) go through pandas' exact
    comparison on every column, so hash collisions cannot cause errors, only extra work.
    """
    if len(df) < 2:
        return np.zeros(len(df), dtype=bool)
    numeric = [
        name
        for name in (bucket_columns if bucket_columns is not None else columns)
        if name in columns and pd.api.types.is_numeric_dtype(df[name].dtype)
    ]
    if not numeric:
        return df.duplicated(subset=columns, keep="first").to_numpy()
    row_hash = np.zeros(len(df), dtype=np.uint64)
    for name in numeric:  # polynomial combination, then one finaliser (collisions only add candidates)
        np.multiply(row_hash, np.uint64(0x9E3779B97F4A7C15), out=row_hash)
        np.add(row_hash, _as_uint64(df[name]), out=row_hash)
    row_hash = _mix64(row_hash)
    candidates = np.flatnonzero(_in_repeated_group(row_hash))
    duplicate = np.zeros(len(df), dtype=bool)
    if candidates.size:
        subset = df.iloc[candidates]
        duplicate[candidates] = subset.duplicated(subset=columns, keep="first").to_numpy()
    return duplicate


def count_repeats(keys: np.ndarray) -> int:
    """Number of entries of ``keys`` equal to an earlier entry (sort based)."""
    if keys.size == 0:
        return 0
    ordered = np.sort(keys)
    return int(np.count_nonzero(ordered[1:] == ordered[:-1]))


def clean_interactions(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop exact duplicate rows and count what the preparation step must know.

    Dropped: rows equal to an earlier row on all 8 columns. Kept but flagged: rows without a timestamp
    (labels only: the preparation step leaves them out of sequences), repeat views of a (user, video)
    pair, and rows whose date differs from the Asia/Shanghai day of their timestamp.

    Args:
        df: an interaction frame as returned by :func:`read_interactions`.
        source: name shown in the report (usually the file name).

    Returns:
        The cleaned frame (original order, fresh index) and its :class:`CleaningReport`.
    """
    missing = [name for name in INTERACTION_COLUMNS if name not in df.columns]
    if missing:
        raise DataValidationError(f"{source}: interaction frame lacks column(s) {missing}")
    # Any exact duplicate shares these four columns with its original: bucket on them only.
    duplicate = exact_duplicates(
        df, INTERACTION_COLUMNS, ["user_id", "video_id", "play_duration", "timestamp"]
    )
    cleaned = df.loc[~duplicate].reset_index(drop=True) if duplicate.any() else df.reset_index(drop=True)

    timestamp = cleaned["timestamp"].to_numpy(dtype=np.float64)
    untimed = np.isnan(timestamp)
    pair_key = cleaned["user_id"].to_numpy(np.int64) << 32 | cleaned["video_id"].to_numpy(np.int64)
    repeat_views = count_repeats(pair_key)
    date = cleaned["date"].to_numpy(dtype=np.float64)
    both = ~untimed & ~np.isnan(date)
    disagree = int(np.count_nonzero(_local_yyyymmdd(timestamp[both]) != date[both]))

    report = CleaningReport(
        source=source,
        rows_in=len(df),
        rows_out=len(cleaned),
        dropped={"exact_duplicate_rows": int(duplicate.sum())},
        flagged={
            "untimed_rows_labels_only": int(untimed.sum()),
            "repeat_views": repeat_views,
            "date_disagrees_with_timestamp": disagree,
        },
    )
    return cleaned, report


def load_interactions(
    path: Path, *, cache: bool = True, cache_dir: Path | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """:func:`read_interactions` followed by :func:`clean_interactions`."""
    frame = read_interactions(path, cache=cache, cache_dir=cache_dir)
    return clean_interactions(frame, Path(path).name)


# ---------------------------------------------------------------------------------------- side files
def read_item_categories(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``item_categories.csv``: video_id int32 and feat, the video's tags as a list of int (0..30)."""
    path = Path(path)
    table = read_validated_table(path, OFFICIAL_FILES["item_categories.csv"])
    return pd.DataFrame(
        {
            "video_id": table.column("video_id").to_numpy(),
            "feat": pd.Series(_parse_int_lists(table.column("feat")), dtype=object),
        }
    )


def read_social_network(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``social_network.csv``: user_id int32 and friend_list, a list of int user ids."""
    path = Path(path)
    table = read_validated_table(path, OFFICIAL_FILES["social_network.csv"])
    return pd.DataFrame(
        {
            "user_id": table.column("user_id").to_numpy(),
            "friend_list": pd.Series(_parse_int_lists(table.column("friend_list")), dtype=object),
        }
    )


def read_user_features(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``user_features.csv``: 31 columns; ranges and activity degree as category, onehot_feat* as Int16.

    Counts are int32, the ``is_*`` flags int8; the encrypted ``onehot_feat*`` codes may be missing, so they
    use pandas' nullable Int16.
    """
    path = Path(path)
    table = read_validated_table(path, OFFICIAL_FILES["user_features.csv"])
    frame = _to_pandas(table)
    for name in _USER_RANGE_COLUMNS:
        frame[name] = frame[name].astype("category")
    schema = OFFICIAL_FILES["user_features.csv"]
    for name in ("is_lowactive_period", "is_live_streamer", "is_video_author"):
        not_flag = frame[name].to_numpy() > 1
        if not_flag.any():
            raise _value_error(path, schema, table, name, not_flag, "a value other than 0 or 1", "a 0/1 flag")
        frame[name] = frame[name].astype(np.int8)
    for name in ("follow_user_num", "fans_user_num", "friend_user_num", "register_days"):
        too_large = frame[name].to_numpy() > _INT32_MAX
        if too_large.any():
            raise _value_error(path, schema, table, name, too_large, "a count above 2^31-1", "int32 counts")
        frame[name] = frame[name].astype(np.int32)
    onehot = [f"onehot_feat{i}" for i in range(18)]
    for name in onehot:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        too_large = values > np.iinfo(np.int16).max  # NaN compares False
        if too_large.any():
            raise _value_error(
                path, schema, table, name, too_large, "a code above 32767", "codes that fit in int16"
            )
    for name in onehot:
        frame[name] = frame[name].astype("Int16")
    return frame


def read_captions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``kuairec_caption_category.csv``: one row per video; quoted multi-line text fields are handled.

    Text columns are pandas ``string``; category ids int32 (-124 means unknown).
    """
    path = Path(path)
    table = read_validated_table(path, OFFICIAL_FILES["kuairec_caption_category.csv"])
    frame = _to_pandas(table)
    for name in ("first_level_category_id", "second_level_category_id", "third_level_category_id"):
        frame[name] = (
            frame[name].astype("Int32") if frame[name].isna().any() else frame[name].astype(np.int32)
        )
    return frame


def read_item_daily_features(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``item_daily_features.csv``: video_id, date (yyyymmdd) and author_id int32; text as category;
    every statistic float64 (NaN where missing)."""
    path = Path(path)
    table = read_validated_table(path, OFFICIAL_FILES["item_daily_features.csv"])
    frame = _to_pandas(table)
    for name in _DAILY_STRING_COLUMNS:
        if name != "upload_dt":
            frame[name] = frame[name].astype("category")
    return frame


#: Reader of each official side file (the matrices go through :func:`load_interactions`).
SIDE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "item_categories.csv": read_item_categories,
    "user_features.csv": read_user_features,
    "kuairec_caption_category.csv": read_captions,
    "item_daily_features.csv": read_item_daily_features,
    "social_network.csv": read_social_network,
}


# ------------------------------------------------------------------------------------------ validation
@dataclass
class FileCheck:
    """Outcome of validating one official file."""

    name: str
    path: Path | None
    rows: int | None = None
    expected_rows: int | None = None
    seconds: float = 0.0
    warning: str | None = None

    @property
    def present(self) -> bool:
        """Whether the file was found."""
        return self.path is not None


@dataclass
class ValidationSummary:
    """What :func:`validate_directory` found: one :class:`FileCheck` per official file."""

    data_dir: Path
    checks: list[FileCheck]
    cleaning: dict[str, CleaningReport] = field(default_factory=dict)

    @property
    def absent(self) -> list[str]:
        """Official files not found."""
        return [check.name for check in self.checks if not check.present]

    @property
    def present(self) -> list[str]:
        """Official files found (and valid: an invalid file raises)."""
        return [check.name for check in self.checks if check.present]

    @property
    def warnings(self) -> list[str]:
        """Row-count mismatches and other non-fatal notes."""
        return [check.warning for check in self.checks if check.warning]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "data_dir": str(self.data_dir),
            "files": [
                {
                    "name": c.name,
                    "path": str(c.path) if c.path else None,
                    "rows": c.rows,
                    "expected_rows": c.expected_rows,
                    "warning": c.warning,
                }
                for c in self.checks
            ],
            "cleaning": {name: report.to_dict() for name, report in self.cleaning.items()},
        }

    def __str__(self) -> str:
        lines = [f"KuaiRec files in {self.data_dir}:"]
        width = max(len(check.name) for check in self.checks)
        for check in self.checks:
            if not check.present:
                lines.append(f"  {check.name:<{width}}  absent")
                continue
            expected = f"{check.expected_rows:,}" if check.expected_rows is not None else "?"
            status = "valid" if not check.warning else "valid, WARNING"
            lines.append(
                f"  {check.name:<{width}}  {status}: {check.rows:,} rows (official {expected}), "
                f"{check.seconds:.1f} s"
            )
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        for report in self.cleaning.values():
            lines.append(str(report))
        if self.absent:
            lines.append(f"absent: {', '.join(self.absent)}")
        lines.append(
            f"{len(self.present)} of {len(self.checks)} official files present, all valid "
            f"({len(self.warnings)} warning(s))"
        )
        return "\n".join(lines)


def _row_warning(name: str, rows: int, schema: FileSchema) -> str | None:
    if schema.expected_rows is None or rows == schema.expected_rows:
        return None
    qualifier = "" if schema.rows_exact else " (approximate official count)"
    return (
        f"{name} has {rows:,} rows, the official file has {schema.expected_rows:,}{qualifier}: "
        "a subset, a simulated file or an incomplete download"
    )


def validate_directory(
    data_dir: Path, *, cache: bool = True, cache_dir: Path | None = None
) -> ValidationSummary:
    """Validate every official KuaiRec file present under ``data_dir`` and list the absent ones.

    Row counts that differ from the official ones are warnings (the simulator writes smaller files); a
    schema or value problem raises :class:`DataValidationError`. The two matrices also get a cleaning
    report.

    Raises:
        MissingDataError: ``data_dir`` does not exist or holds no official file.
        DataValidationError: a present file is invalid.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDataError(f"data directory {data_dir} does not exist")
    checks: list[FileCheck] = []
    cleaning: dict[str, CleaningReport] = {}
    for name, schema in OFFICIAL_FILES.items():
        found = find_file(data_dir, name)
        check = FileCheck(name=name, path=found, expected_rows=schema.expected_rows)
        checks.append(check)
        if found is None:
            continue
        started = time.perf_counter()
        if name in INTERACTION_FILES:
            _frame, report = load_interactions(found, cache=cache, cache_dir=cache_dir)
            cleaning[name] = report
            check.rows = report.rows_in
        else:
            check.rows = len(SIDE_READERS[name](found))
        check.seconds = time.perf_counter() - started
        check.warning = _row_warning(name, check.rows, schema)
    summary = ValidationSummary(data_dir=data_dir, checks=checks, cleaning=cleaning)
    if not summary.present:
        looked = ", ".join(str(data_dir.joinpath(*parts)) for parts in SEARCH_SUBDIRS)
        raise MissingDataError(
            f"no official KuaiRec file found in {data_dir} (looked in {looked}); "
            "run `python -m sasrec download` or `make data`"
        )
    return summary


def _run_validate(args: argparse.Namespace) -> int:
    data_dir = Path(args.dir) if args.dir else paths.raw_dir()
    summary = validate_directory(data_dir, cache=not args.no_cache)
    print(summary)
    return 0


def add_validate_parser(subparsers: Any) -> None:
    """Register ``python -m sasrec validate [DIR]``."""
    parser = subparsers.add_parser(
        "validate",
        help="check the official KuaiRec files in a directory (schema, row counts, cleaning report)",
        description=(
            "Validate every official KuaiRec 2.0 file found in DIR, DIR/data or DIR/'KuaiRec 2.0'/data: "
            "header, value checks and row counts (a count that differs from the official one is a warning). "
            "Exit status 0 when every present file is valid, 2 otherwise."
        ),
    )
    parser.add_argument("dir", nargs="?", default=None, help=f"data directory (default {paths.raw_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the parquet cache")
    parser.set_defaults(func=_run_validate)
