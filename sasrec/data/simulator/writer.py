"""Writing simulated tables in the official KuaiRec text formats (units, quirks, list literals)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from sasrec import paths
from sasrec.data.simulator.calibration import _DAY_MS, _LOCAL_OFFSET_MS, INTERACTION_COLUMNS
from sasrec.data.simulator.timelines import _local_days, _yyyymmdd_of_days
from sasrec.data.simulator.world import _World


# ----------------------------------------------------------------------------------------------- writing
def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(N, width) ASCII digits of non-negative integers, zero-padded on the left."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8)


@functools.cache
def _text_tables() -> dict[str, np.ndarray]:
    """Lookup tables of fixed-width text: 5-digit numbers, "HH:MM:SS" of each second of a day, and the
    millisecond fraction as KuaiRec prints it (trailing zeros dropped, at least one digit)."""
    seconds = np.arange(86_400)
    clock = np.empty((86_400, 8), dtype=np.uint8)
    clock[:, 0:2] = _digits(seconds // 3600, 2)
    clock[:, 3:5] = _digits(seconds // 60 % 60, 2)
    clock[:, 6:8] = _digits(seconds % 60, 2)
    clock[:, [2, 5]] = ord(":")
    millis = np.arange(1000)
    return {
        "five": _digits(np.arange(100_000), 5),
        "clock": clock,
        "fraction": _digits(millis, 3),
        "fraction_length": np.where(millis % 10 != 0, 3, np.where(millis % 100 != 0, 2, 1)),
    }


def _text_array(chars: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Arrow string array whose row i is the first lengths[i] bytes of chars[i] (null where not valid)."""
    n_rows, width = chars.shape
    lengths = np.where(valid, lengths, 0)
    keep = np.arange(width)[None, :] < lengths[:, None]
    data = chars[keep] if not keep.all() else chars.ravel()
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    null_count = int(n_rows - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    return pa.StringArray.from_buffers(
        n_rows, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), bitmap, null_count
    )


def _time_columns(unix_ms: np.ndarray, valid: np.ndarray, *, date_as_float: bool) -> dict[str, pa.Array]:
    """KuaiRec's ``time``, ``date`` and ``timestamp`` columns of Unix milliseconds (null where not valid).

    time: "2020-07-05 00:08:23.438" (Asia/Shanghai wall clock); date: yyyymmdd, an integer or, for
    ``date_as_float``, float text "20200705.0"; timestamp: Unix seconds as Python prints the float
    ("1593878903.438", "1593882025.5"). The fraction of ``time`` has the timestamp's digits, as in real rows.
    """
    tables = _text_tables()
    unix_ms = np.where(valid, unix_ms, unix_ms[valid][0] if valid.any() else 1_593_878_903_438)
    seconds, millis = np.divmod(unix_ms, 1000)
    if not ((seconds >= 10**9) & (seconds < 10**10)).all():
        raise ValueError("timestamps must have 10 integer digits")  # never for 2020 dates
    days = _local_days(unix_ms)
    first_day = int(days.min())
    day_index = days - first_day
    all_days = np.arange(first_day, int(days.max()) + 1)
    yyyymmdd = _yyyymmdd_of_days(all_days)
    date_chars = np.empty((len(all_days), 10), dtype=np.uint8)  # "YYYY-MM-DD"
    date_chars[:, 0:4] = _digits(yyyymmdd // 10_000, 4)
    date_chars[:, 5:7] = _digits(yyyymmdd // 100 % 100, 2)
    date_chars[:, 8:10] = _digits(yyyymmdd % 100, 2)
    date_chars[:, [4, 7]] = ord("-")
    fraction = tables["fraction"][millis]  # (N, 3)
    fraction_length = tables["fraction_length"][millis]

    time_chars = np.empty((len(unix_ms), 23), dtype=np.uint8)
    time_chars[:, 0:10] = date_chars[day_index]
    time_chars[:, 10] = ord(" ")
    time_chars[:, 11:19] = tables["clock"][(unix_ms + _LOCAL_OFFSET_MS - days * _DAY_MS) // 1000]
    time_chars[:, 19] = ord(".")
    time_chars[:, 20:23] = fraction

    stamp_chars = np.empty((len(unix_ms), 14), dtype=np.uint8)
    stamp_chars[:, 0:5] = tables["five"][seconds // 100_000]
    stamp_chars[:, 5:10] = tables["five"][seconds % 100_000]
    stamp_chars[:, 10] = ord(".")
    stamp_chars[:, 11:14] = fraction

    if date_as_float:
        float_chars = np.empty((len(all_days), 10), dtype=np.uint8)
        float_chars[:, 0:8] = _digits(yyyymmdd, 8)
        float_chars[:, 8:10] = [ord("."), ord("0")]
        date = _text_array(float_chars[day_index], np.full(len(unix_ms), 10), valid)
    else:
        date = pa.array(yyyymmdd[day_index], pa.int64(), mask=~valid)
    return {
        "time": _text_array(time_chars, 20 + fraction_length, valid),
        "date": date,
        "timestamp": _text_array(stamp_chars, 11 + fraction_length, valid),
    }


def _float_text(values: np.ndarray) -> pa.Array:
    """Shortest round-trip text of finite floats, with '.0' on integral values (as pandas writes them)."""
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    integral = np.floor(values) == values
    if integral.any():
        fixed = pc.binary_join_element_wise(
            pc.cast(pa.array(values[integral].astype(np.int64)), pa.string()), ".0", ""
        )
        text = pc.replace_with_mask(text, pa.array(integral), fixed)
    return text


def _write_interactions(path: Path, columns: dict[str, np.ndarray], *, date_as_float: bool) -> None:
    """Write an interaction matrix in KuaiRec's text format, in blocks of rows, atomically.

    ``columns`` holds user_id, video_id, play_duration, video_duration, unix_ms, date (yyyymmdd, may
    disagree with unix_ms on purpose), watch_ratio and optionally untimed (rows written without time,
    date and timestamp).
    """
    n_rows = len(columns["user_id"])
    untimed = columns.get("untimed", np.zeros(n_rows, dtype=bool))
    header = (",".join(INTERACTION_COLUMNS) + "\n").encode()
    options = pv.WriteOptions(include_header=False, quoting_style="none")
    block = 1_000_000
    with paths.atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(header)
        for first in range(0, n_rows, block):
            rows = slice(first, min(first + block, n_rows))
            timed = ~untimed[rows]
            text = _time_columns(columns["unix_ms"][rows], timed, date_as_float=date_as_float)
            date = columns["date"][rows]
            if not date_as_float:  # the written date may be a day off the timestamp (real quirk)
                text["date"] = pa.array(date, pa.int64(), mask=~timed)
            table = pa.table(
                {
                    "user_id": pa.array(columns["user_id"][rows], pa.int64()),
                    "video_id": pa.array(columns["video_id"][rows], pa.int64()),
                    "play_duration": pa.array(columns["play_duration"][rows], pa.int64()),
                    "video_duration": pa.array(columns["video_duration"][rows], pa.int64()),
                    "time": text["time"],
                    "date": text["date"],
                    "timestamp": text["timestamp"],
                    "watch_ratio": _float_text(columns["watch_ratio"][rows]),
                }
            )
            pv.write_csv(table, handle, write_options=options)


def _write_item_categories(path: Path, world: _World) -> None:
    """item_categories.csv: video_id and feat, a list literal such as "[27, 9]"."""
    text = pd.Series(world.tag_ids[:, 0].astype(str))
    for k in range(1, 4):
        extra = ", " + pd.Series(world.tag_ids[:, k].astype(str))
        text = text + extra.where(world.n_tags > k, "")
    frame = pd.DataFrame({"video_id": np.arange(world.n_videos), "feat": "[" + text + "]"})
    with paths.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _zipf_choice(cardinality: int, size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Codes 0..cardinality-1 with Zipf-like frequencies over a random order of the codes."""
    weights = 1.0 / (np.arange(cardinality) + 2.0) ** exponent
    codes = rng.permutation(cardinality)
    return codes[rng.choice(cardinality, size=size, p=weights / weights.sum())]


def _categorical(values: list[int], probs: list[float], size: int, rng: np.random.Generator) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(values)[rng.choice(len(values), size=size, p=p / p.sum())]


def _ranges(values: np.ndarray, edges: list[int], labels: list[str]) -> np.ndarray:
    """Label of each value: labels[i] for edges[i-1] < value <= edges[i] (first label: value <= edges[0])."""
    return np.asarray(labels)[np.searchsorted(np.asarray(edges), values, side="left")]


def _user_features(n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    """Plausible user_features.csv columns drawn from approximate marginals of the real file."""
    follow = np.minimum(np.floor(np.exp(rng.normal(np.log(33), 1.98, n_users))), 2100).astype(np.int64)
    fans = np.where(
        rng.random(n_users) < 0.3, 0, np.ceil(np.exp(rng.normal(np.log(4), 1.3, n_users)))
    ).astype(np.int64)
    friends = np.where(
        rng.random(n_users) < 0.6, 0, np.ceil(np.exp(rng.normal(np.log(2), 1.2, n_users)))
    ).astype(np.int64)
    register = np.clip(np.rint(np.exp(rng.normal(np.log(225), 0.76, n_users))), 0, 2245).astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n_users),
            "user_active_degree": _categorical(
                ["full_active", "high_active", "UNKNOWN", "middle_active"],
                [0.849, 0.131, 0.016, 0.004],
                n_users,
                rng,
            ),
            "is_lowactive_period": (rng.random(n_users) < 0.0005).astype(np.int64),
            "is_live_streamer": (rng.random(n_users) < 0.007).astype(np.int64),
            "is_video_author": (rng.random(n_users) < 0.17).astype(np.int64),
            "follow_user_num": follow,
            "follow_user_num_range": _ranges(
                follow,
                [0, 10, 50, 100, 150, 250, 500],
                ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"],
            ),
            "fans_user_num": fans,
            "fans_user_num_range": _ranges(
                fans,
                [0, 9, 99, 999, 4999, 9999],
                ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)"],
            ),
            "friend_user_num": friends,
            "friend_user_num_range": _ranges(
                friends,
                [0, 4, 29, 59, 119, 249],
                ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"],
            ),
            "register_days": register,
            "register_days_range": _ranges(
                register,
                [30, 60, 90, 180, 365, 730],
                ["15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"],
            ),
        }
    )
    features: dict[str, np.ndarray] = {
        "onehot_feat0": (rng.random(n_users) < 0.392).astype(np.int64),
        "onehot_feat1": _categorical(
            [1, 4, 3, 6, 2, 5, 0, 7], [0.429, 0.153, 0.132, 0.115, 0.103, 0.067, 0.0005, 0.0005], n_users, rng
        ),
        "onehot_feat2": _zipf_choice(30, n_users, 1.6, rng),
        "onehot_feat3": _zipf_choice(1076, n_users, 0.9, rng),
        "onehot_feat4": _categorical(
            list(range(12)),
            [0.295, 0.467, 0.171, 0.045, 0.011, 0.006, 0.003, 0.001, 0.0005, 0.0003, 0.0002, 0.0002],
            n_users,
            rng,
        ),
        "onehot_feat5": np.where(rng.random(n_users) < 0.998, 0, rng.integers(1, 10, n_users)),
        "onehot_feat6": _categorical([1, 0, 2], [0.563, 0.435, 0.002], n_users, rng),
        "onehot_feat7": _zipf_choice(47, n_users, 1.0, rng),
        "onehot_feat8": _zipf_choice(340, n_users, 0.9, rng),
        "onehot_feat9": _categorical(
            [6, 3, 5, 4, 1, 2, 0], [0.241, 0.188, 0.174, 0.159, 0.154, 0.081, 0.003], n_users, rng
        ),
        "onehot_feat10": _categorical([2, 3, 4, 0, 1], [0.524, 0.234, 0.128, 0.113, 0.001], n_users, rng),
        "onehot_feat11": _categorical([0, 2, 1], [0.929, 0.066, 0.005], n_users, rng),
    }
    for index, share in zip(range(12, 18), (0.299, 0.105, 0.095, 0.019, 0.018, 0.015), strict=True):
        features[f"onehot_feat{index}"] = (rng.random(n_users) < share).astype(np.int64)
    for name in features:
        frame[name] = features[name]
    # Codes the real file leaves empty for some users (feat4 about 2.8%, feats 12-17 about 1%).
    for name, share in [("onehot_feat4", 0.028)] + [(f"onehot_feat{i}", 0.0105) for i in range(12, 18)]:
        frame[name] = frame[name].astype("Int64").mask(rng.random(n_users) < share)
    return frame


def _write_user_features(path: Path, frame: pd.DataFrame) -> None:
    with paths.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


# ------------------------------------------------------------------------------------------ side files
def _csv_field(values: pd.Series) -> pd.Series:
    """CSV text of a column: fields holding a comma, a double quote or a newline are quoted (quotes
    doubled); a bare carriage return stays unquoted, as in the real caption file."""
    text = values.astype(object).where(values.notna(), "").astype(str)
    needs_quotes = text.str.contains('[,"\n]', regex=True)
    quoted = '"' + text.str.replace('"', '""', regex=False) + '"'
    return text.where(~needs_quotes, quoted)


def _write_captions(path: Path, frame: pd.DataFrame) -> None:
    """kuairec_caption_category.csv: the official columns, one row per video, minimal quoting, '\\n' rows."""
    fields = [_csv_field(frame[name]) for name in frame.columns]  # ten columns
    line = fields[0]
    for field in fields[1:]:
        line = line + "," + field
    text = ",".join(frame.columns) + "\n" + "\n".join(line.tolist()) + "\n"
    with paths.atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def _write_item_daily(path: Path, table: pa.Table) -> None:
    """item_daily_features.csv: integers as integers, missing values as empty fields, no quoting."""
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_string(column.type) and pc.any(pc.match_substring_regex(column, '[,"\r\n]')).as_py():
            raise ValueError(f"{name}: a value needs quoting")  # never: the simulated names are plain
    options = pv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16)
    with paths.atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write((",".join(table.column_names) + "\n").encode())
        pv.write_csv(table, handle, write_options=options)
