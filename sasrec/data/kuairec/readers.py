"""Validated pyarrow readers of the KuaiRec CSV files and file discovery.

Every reader checks the header and the values and raises :class:`sasrec.errors.DataValidationError`
naming the file, the column, how many rows are bad, one example row with its line number and what was
expected; a raw pyarrow error never escapes for bad input.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from sasrec.data.kuairec.schema import (
    _DAILY_STRING_COLUMNS,
    _USER_RANGE_COLUMNS,
    INTERACTION_FILES,
    OFFICIAL_FILES,
    SEARCH_SUBDIRS,
    FileSchema,
)
from sasrec.errors import DataValidationError, MissingDataError

_FINGERPRINT_BLOCK = 1 << 20  # 1 MiB
_INT32_MAX = np.iinfo(np.int32).max
_CR_PLACEHOLDER = "\ue000"  # private-use character standing in for a bare carriage return while parsing
_INT_PATTERN = r"^\s*[+-]?\d+\s*$"
_FLOAT_PATTERN = (
    r"(?i)^\s*[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan|-nan|1\.#ind|1\.#qnan)\s*$"
)
_INT_LIST_PATTERN = r"^\s*\[\s*(\d+\s*(,\s*\d+\s*)*)?\]\s*$"


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


def _one_line(text: str, limit: int = 240) -> str:
    """``text`` on one line (line breaks shown as ``\\n``), cut to ``limit`` characters."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


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
        raise DataValidationError(f"{path}: could not be parsed as CSV: {_one_line(str(exc))}") from None
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
    raise DataValidationError(f"{path}: a value could not be converted: {_one_line(arrow_message)}")


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
            quote = " (an unterminated quote?)" if message.count('"') % 2 else ""
            raise DataValidationError(
                f"{path}: malformed CSV row{quote}: {_one_line(message)}; expected {len(header)} "
                "comma-separated fields per row"
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
