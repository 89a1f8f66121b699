"""Tests of the KuaiRec readers, validation, cleaning report, parquet cache and ``validate`` command."""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sasrec import paths
from sasrec.data import kuairec
from sasrec.data.kuairec import cache as kuairec_cache
from sasrec.data.kuairec.cleaning import _local_yyyymmdd
from sasrec.errors import DataValidationError, MissingDataError, SasrecError
from tests.conftest import kuairec_sample_dir

HEADER = ",".join(kuairec.INTERACTION_COLUMNS)
ROW_A = "1,10,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.2733965215790926"
ROW_B = "1,11,851,7908,2020-07-05 00:16:06.687,20200705,1593879366.687,0.1076125442589782"
ROW_C = "2,12,862,9590,2020-07-05 00:20:26.792,20200705,1593879626.792,0.0898853"


def write(directory: Path, name: str, lines: list[str], *, bom: bool = False) -> Path:
    path = directory / name
    text = "\n".join(lines) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture(autouse=True)
def _isolated_root(root: Path) -> None:
    """Keep default cache paths inside tmp_path (never the repository's data/)."""


def sample_dir() -> Path:
    # SASREC_ROOT is redirected by the autouse fixture: locate the samples from this file instead.
    return kuairec_sample_dir(None, "samples")


# ------------------------------------------------------------------------------------------ real files
def test_real_big_matrix_head() -> None:
    frame = kuairec.read_interactions(sample_dir() / "big_matrix_head1000.csv", cache=False)
    assert len(frame) == 1000
    assert list(frame.columns) == kuairec.INTERACTION_COLUMNS
    assert set(frame["user_id"].unique()) == {0}
    expected = {
        "user_id": "int32",
        "video_id": "int32",
        "play_duration": "int64",
        "video_duration": "int64",
        "date": "float64",
        "timestamp": "float64",
        "watch_ratio": "float64",
    }
    assert {name: str(frame[name].dtype) for name in expected} == expected
    assert frame["time"].dtype == "string"
    np.testing.assert_allclose(
        frame["watch_ratio"], frame["play_duration"] / frame["video_duration"], rtol=1e-12
    )
    # First real row, from the file itself.
    assert frame.loc[0, ["video_id", "play_duration", "video_duration"]].tolist() == [3649, 13838, 10867]
    assert frame.loc[0, "time"] == "2020-07-05 00:08:23.438"


def test_real_item_categories() -> None:
    frame = kuairec.read_item_categories(sample_dir() / "item_categories.csv")
    assert len(frame) == 10_728
    assert frame["video_id"].dtype == "int32"
    lengths = frame["feat"].map(len)
    assert lengths.min() == 1 and lengths.max() == 4
    tags = np.concatenate(frame["feat"].to_numpy())
    assert tags.min() >= 0 and tags.max() <= 30
    assert frame.loc[frame["video_id"] == 1, "feat"].iloc[0] == [27, 9]
    assert frame.loc[frame["video_id"] == 0, "feat"].iloc[0] == [8]


def test_real_user_features() -> None:
    frame = kuairec.read_user_features(sample_dir() / "user_features.csv")
    assert frame.shape == (7_176, 31)
    assert frame["user_id"].dtype == "int32"
    assert isinstance(frame["fans_user_num_range"].dtype, pd.CategoricalDtype)
    assert frame["onehot_feat4"].isna().sum() > 0  # the real file has empty codes


def test_real_captions_with_carriage_returns() -> None:
    frame = kuairec.read_captions(sample_dir() / "kuairec_caption_category.csv")
    assert len(frame) == 10_728
    assert frame["video_id"].is_unique
    assert np.array_equal(np.sort(frame["video_id"].to_numpy()), np.arange(10_728))
    # Four captions hold a bare carriage return inside an unquoted field; it must survive the parse.
    caption = frame.loc[frame["video_id"] == 1378, "caption"].iloc[0]
    assert caption.endswith("王朝\r！”")
    assert frame["caption"].str.contains("\r", regex=False).sum() == 4


# --------------------------------------------------------------------------------------- validation
def _error_for(tmp_path: Path, lines: list[str], name: str = "big_matrix.csv") -> str:
    path = write(tmp_path, name, lines)
    with pytest.raises(DataValidationError) as info:
        kuairec.read_interactions(path, cache=False)
    message = str(info.value)
    assert name in message
    return message


def test_missing_column(tmp_path: Path) -> None:
    header = HEADER.rsplit(",", 1)[0]
    message = _error_for(tmp_path, [header, ROW_A.rsplit(",", 1)[0]])
    assert "missing column(s) ['watch_ratio']" in message
    assert "expected exactly the columns" in message


def test_extra_column(tmp_path: Path) -> None:
    message = _error_for(tmp_path, [HEADER + ",extra", ROW_A + ",1"])
    assert "extra column(s) ['extra']" in message


def test_non_numeric_value_located(tmp_path: Path) -> None:
    bad = ROW_B.replace(",851,", ",abc,")
    message = _error_for(tmp_path, [HEADER, ROW_A, bad, ROW_C])
    assert "column 'play_duration'" in message
    assert "1 of 3 rows" in message
    assert "line 3" in message
    assert '"play_duration": "abc"' in message
    assert "expected integers" in message
    assert "ArrowInvalid" not in message


def test_missing_id(tmp_path: Path) -> None:
    bad = ROW_B.replace("1,11,", ",11,", 1)
    message = _error_for(tmp_path, [HEADER, ROW_A, bad, ROW_C])
    assert "column 'user_id'" in message and "missing id" in message
    assert "line 3" in message and '"video_id": 11' in message


def test_non_integer_id(tmp_path: Path) -> None:
    bad = ROW_C.replace("2,12,", "2,12.5,", 1)
    message = _error_for(tmp_path, [HEADER, ROW_A, ROW_B, bad])
    assert "column 'video_id'" in message and "line 4" in message and "12.5" in message


def test_negative_duration(tmp_path: Path) -> None:
    bad = ROW_A.replace(",10867,", ",-5,")
    message = _error_for(tmp_path, [HEADER, bad, ROW_B])
    assert "column 'video_duration'" in message and "negative" in message
    assert "line 2" in message and '"video_duration": -5' in message and "values >= 0" in message


@pytest.mark.parametrize("token", ["inf", "NaN", ""])
def test_non_finite_watch_ratio(tmp_path: Path, token: str) -> None:
    bad = ROW_B.rsplit(",", 1)[0] + "," + token
    message = _error_for(tmp_path, [HEADER, ROW_A, ROW_C, bad, ROW_C])
    assert "column 'watch_ratio'" in message and "1 of 4 rows" in message and "line 4" in message
    assert "finite" in message


def test_missing_timestamps_are_allowed(tmp_path: Path) -> None:
    untimed = "3,13,100,200,,,,0.5"
    frame = kuairec.read_interactions(
        write(tmp_path, "small_matrix.csv", [HEADER, ROW_A, untimed]), cache=False
    )
    assert frame["timestamp"].isna().tolist() == [False, True]
    assert frame["date"].isna().tolist() == [False, True]
    assert frame["time"].isna().tolist() == [False, True]


def test_ragged_row(tmp_path: Path) -> None:
    message = _error_for(tmp_path, [HEADER, ROW_A, ROW_B + ",7"])
    assert "malformed CSV row" in message and "expected 8 comma-separated fields" in message


def test_malformed_tag_list(tmp_path: Path) -> None:
    path = write(tmp_path, "item_categories.csv", ["video_id,feat", '0,"[1, 2]"', "1,[x]"])
    with pytest.raises(DataValidationError, match=r"column 'feat'.*line 3.*\[x\].*list literal"):
        kuairec.read_item_categories(path)


def test_empty_tag_list_parses(tmp_path: Path) -> None:
    path = write(tmp_path, "social_network.csv", ["user_id,friend_list", '5,"[4202, 7126]"', "6,[]", "7,[3]"])
    frame = kuairec.read_social_network(path)
    assert frame["friend_list"].tolist() == [[4202, 7126], [], [3]]
    assert frame["user_id"].tolist() == [5, 6, 7]


def test_bom_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path, "big_matrix.csv", [HEADER, ROW_A, ROW_B], bom=True)
    frame = kuairec.read_interactions(path, cache=False)
    assert frame["user_id"].tolist() == [1, 1]
    assert frame["video_id"].tolist() == [10, 11]


def test_missing_file_raises_missing_data(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="does not exist"):
        kuairec.read_interactions(tmp_path / "big_matrix.csv", cache=False)


def test_find_file_layouts(tmp_path: Path) -> None:
    nested = tmp_path / "KuaiRec 2.0" / "data"
    nested.mkdir(parents=True)
    write(nested, "big_matrix.csv", [HEADER])
    assert kuairec.find_file(tmp_path, "big_matrix.csv") == nested / "big_matrix.csv"
    assert not kuairec.has_official_matrices(tmp_path)
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "small_matrix.csv", [HEADER])
    assert kuairec.find_file(tmp_path, "small_matrix.csv") == tmp_path / "data" / "small_matrix.csv"
    assert kuairec.has_official_matrices(tmp_path)
    assert kuairec.find_file(tmp_path, "user_features.csv") is None


def test_count_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "big_matrix.csv"
    path.write_text(f"{HEADER}\n{ROW_A}\n{ROW_B}")  # no final newline
    assert kuairec.count_csv_rows(path) == 2
    path.write_text(f"{HEADER}\n{ROW_A}\n{ROW_B}\n")
    assert kuairec.count_csv_rows(path) == 2


# -------------------------------------------------------------------------------------------- cache
def test_cache_hit_and_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write(tmp_path, "big_matrix.csv", [HEADER, ROW_A, ROW_B])
    cache_dir = tmp_path / "cache"
    parses: list[Path] = []
    original = kuairec.read_validated_table

    def counting(path: Path, schema: kuairec.FileSchema | None = None) -> object:
        parses.append(Path(path))
        return original(path, schema)

    monkeypatch.setattr(kuairec_cache, "read_validated_table", counting)
    first = kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 1
    assert len(list(cache_dir.glob("*.parquet"))) == 1 and len(list(cache_dir.glob("*.json"))) == 1
    second = kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 1  # served from parquet
    pd.testing.assert_frame_equal(first, second)

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 2

    write(tmp_path, "big_matrix.csv", [HEADER, ROW_A, ROW_B, ROW_C])  # changed content
    changed = kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 3 and len(changed) == 3
    assert kuairec.read_interactions(source, cache_dir=cache_dir)["video_id"].tolist() == [10, 11, 12]
    assert len(parses) == 3
    assert not list(cache_dir.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_damaged_cache_entry_is_rebuilt_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = write(tmp_path, "big_matrix.csv", [HEADER, ROW_A, ROW_B, ROW_C])
    cache_dir = tmp_path / "cache"
    parses: list[Path] = []
    original = kuairec.read_validated_table
    monkeypatch.setattr(
        kuairec_cache,
        "read_validated_table",
        lambda path, schema=None: parses.append(path) or original(path, schema),
    )
    clean = kuairec.read_interactions(source, cache_dir=cache_dir)
    parquet = next(cache_dir.glob("*.parquet"))
    stale = cache_dir / f".{parquet.name}.a1b2c3d4.tmp"  # left by a killed writer
    stale.write_bytes(b"half")
    size = parquet.stat().st_size
    damages = {
        "does not match its sha256": lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],
        f"has 100 bytes instead of {size}": lambda data: data[:100],
    }
    for expected, damage in damages.items():
        parquet.write_bytes(damage(parquet.read_bytes()))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sasrec"):
            again = kuairec.read_interactions(source, cache_dir=cache_dir)
        pd.testing.assert_frame_equal(again, clean)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "is damaged" in warnings[0] and expected in warnings[0]
        assert "reading the CSV again" in warnings[0]
    assert len(parses) == 3 and not stale.exists()
    kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 3  # the rebuilt entry verifies

    sidecar = parquet.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"rows": 3', '"rows": 2'))  # edited by hand
    kuairec.read_interactions(source, cache_dir=cache_dir)
    assert len(parses) == 4


def test_cache_is_pruned_to_existing_sources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache_dir = tmp_path / "cache"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept = write(tmp_path / "a", "small_matrix.csv", [HEADER, ROW_A])
    gone = write(tmp_path / "b", "small_matrix.csv", [HEADER, ROW_B])
    kuairec.read_interactions(kept, cache_dir=cache_dir)
    kuairec.read_interactions(gone, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*.parquet"))) == 2  # one entry per source path
    gone.unlink()
    (cache_dir / "orphan-0000.parquet").write_bytes(b"written by a killed run, no sidecar")
    entries = {entry.parquet.name: entry.problem for entry in kuairec.cache_entries(cache_dir)}
    assert sorted(entries.values(), key=str) == [None, "orphan parquet (no sidecar)", "source gone"]
    with caplog.at_level(logging.INFO, logger="sasrec"):
        kuairec.read_interactions(kept, cache_dir=cache_dir)
    remaining = sorted(p.name for p in cache_dir.iterdir())
    assert len(remaining) == 3 and all(
        name.startswith(("small_matrix-", ".small_matrix-")) for name in remaining
    )
    assert [entry.problem for entry in kuairec.cache_entries(cache_dir, verify=True)] == [None]
    assert any("pruned 3 parquet cache file(s)" in r.getMessage() for r in caplog.records)


def test_cache_defaults_to_processed_dir(tmp_path: Path) -> None:
    source = write(tmp_path, "big_matrix.csv", [HEADER, ROW_A])
    kuairec.read_interactions(source)
    cache_files = list((paths.processed_dir() / "cache").glob("big_matrix-*.parquet"))
    assert len(cache_files) == 1
    assert str(paths.processed_dir()).startswith(str(tmp_path))


def test_source_fingerprint_changes_with_tail(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * (3 << 20))
    before = kuairec.source_fingerprint(path)
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek((3 << 20) - 1)
        handle.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the tail differs
    assert kuairec.source_fingerprint(path) != before


# ------------------------------------------------------------------------------------------ cleaning
def test_cleaning_report_counts(tmp_path: Path) -> None:
    rows = [
        "1,10,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.27",  # kept
        "1,10,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.27",  # exact duplicate
        "1,10,500,10867,2020-07-05 00:13:41.297,20200705,1593879221.297,0.046",  # repeat view of (1, 10)
        "1,11,100,200,,,,0.5",  # untimed
        "1,11,100,200,,,,0.5",  # untimed exact duplicate
        "2,11,300,200,2020-07-05 00:08:23.438,20200704,1593878903.438,1.5",  # date disagrees (Shanghai)
        # 16:08 UTC on 4 July is 00:08 on 5 July in Asia/Shanghai: agrees there, disagrees in UTC.
        "3,12,300,200,2020-07-05 00:08:23.438,20200705,1593878903.438,1.5",
    ]
    frame = kuairec.read_interactions(write(tmp_path, "small_matrix.csv", [HEADER, *rows]), cache=False)
    cleaned, report = kuairec.clean_interactions(frame, "small_matrix.csv")
    assert report.rows_in == 7 and report.rows_out == 5 and len(cleaned) == 5
    assert report.dropped == {"exact_duplicate_rows": 2}
    assert report.flagged == {
        "untimed_rows_labels_only": 1,
        "repeat_views": 1,
        "date_disagrees_with_timestamp": 1,
    }
    assert cleaned["user_id"].tolist() == [1, 1, 1, 2, 3]
    assert cleaned["play_duration"].tolist() == [13838, 500, 100, 300, 300]
    assert cleaned.index.tolist() == list(range(5))

    table = report.to_frame()
    assert table.loc[table["name"] == "exact_duplicate_rows", "rows"].item() == 2
    assert table.loc[table["name"] == "rows_out", "percent"].item() == pytest.approx(500 / 7)
    assert report.to_dict()["flagged"]["repeat_views"] == 1
    text = str(report)
    assert (
        "small_matrix.csv" in text and "exact_duplicate_rows" in text and "untimed_rows_labels_only" in text
    )


def test_load_interactions_combines_read_and_clean(tmp_path: Path) -> None:
    path = write(tmp_path, "big_matrix.csv", [HEADER, ROW_A, ROW_A, ROW_B])
    frame, report = kuairec.load_interactions(path, cache=False)
    assert (
        len(frame) == 2 and report.source == "big_matrix.csv" and report.dropped["exact_duplicate_rows"] == 1
    )


# ------------------------------------------------------------------------------------ validate command
def _valid_dir(tmp_path: Path) -> Path:
    data = tmp_path / "raw" / "KuaiRec 2.0" / "data"
    data.mkdir(parents=True)
    write(data, "big_matrix.csv", [HEADER, ROW_A, ROW_B, ROW_C])
    write(data, "small_matrix.csv", [HEADER, ROW_A, "3,13,100,200,,,,0.5"])
    write(data, "item_categories.csv", ["video_id,feat", "10,[8]", '11,"[27, 9]"'])
    return tmp_path / "raw"


def _run_cli(argv: list[str]) -> int:
    """Mirror sasrec.cli.main with only this module's sub-command registered."""
    parser = argparse.ArgumentParser(prog="python -m sasrec")
    from sasrec.cli import validate as validate_cli

    validate_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SasrecError as exc:
        print(f"error: {exc}")
        return 2


def test_validate_directory_summary(tmp_path: Path) -> None:
    summary = kuairec.validate_directory(_valid_dir(tmp_path), cache=False)
    assert summary.present == ["big_matrix.csv", "small_matrix.csv", "item_categories.csv"]
    assert set(summary.absent) == set(kuairec.OFFICIAL_FILES) - set(summary.present)
    rows = {check.name: check.rows for check in summary.checks if check.present}
    assert rows == {"big_matrix.csv": 3, "small_matrix.csv": 2, "item_categories.csv": 2}
    assert len(summary.warnings) == 3 and "official file has 12,530,806" in summary.warnings[0]
    assert summary.cleaning["small_matrix.csv"].flagged["untimed_rows_labels_only"] == 1
    text = str(summary)
    assert "user_features.csv" in text and "absent" in text and "cleaning report for big_matrix.csv" in text


def test_validate_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _valid_dir(tmp_path)
    assert _run_cli(["validate", str(raw)]) == 0
    assert "valid" in capsys.readouterr().out

    write(raw / "KuaiRec 2.0" / "data", "small_matrix.csv", [HEADER, ROW_A.replace(",10867,", ",-1,")])
    assert _run_cli(["validate", str(raw), "--no-cache"]) == 2
    out = capsys.readouterr().out
    error = out.splitlines()[-1]
    assert error.startswith("error: 1 invalid official file(s)") and "small_matrix.csv" in error
    assert "video_duration" in error
    assert re.search(r"small_matrix\.csv +INVALID: ", out) and re.search(r"big_matrix\.csv +valid", out)

    assert _run_cli(["validate", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_validate_lists_every_bad_file_and_rejects_header_only_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _valid_dir(tmp_path)
    data = raw / "KuaiRec 2.0" / "data"
    write(data, "small_matrix.csv", [HEADER])  # header only: prepare would refuse it, so must validate
    write(data, "item_categories.csv", ["video_id,feat", '10,"[8]', '11,"[27, 9]"'])  # unterminated quote
    write(data, "social_network.csv", ["user_id,friend_list", "1,[2"])  # malformed list
    summary = kuairec.validate_directory(raw, cache=False, raise_errors=False)
    assert [check.name for check in summary.invalid] == [
        "small_matrix.csv",
        "item_categories.csv",
        "social_network.csv",
    ]
    errors = {check.name: check.error or "" for check in summary.invalid}
    assert "a header and no data row; expected 4,676,570 rows" in errors["small_matrix.csv"]
    assert "malformed CSV row (an unterminated quote?)" in errors["item_categories.csv"]
    assert "column 'friend_list'" in errors["social_network.csv"]
    assert all("\n" not in error for error in errors.values())
    with pytest.raises(DataValidationError, match=r"^3 invalid official file\(s\)") as caught:
        kuairec.validate_directory(raw, cache=False)
    assert "\n" not in str(caught.value)
    assert "2 of 7 official files present" not in str(summary) and "3 invalid" in str(summary)

    assert _run_cli(["validate", str(raw), "--no-cache"]) == 2
    out = capsys.readouterr().out
    assert out.count("INVALID: ") == 3 and out.splitlines()[-1].startswith("error: 3 invalid")


def test_validate_resolves_a_relative_folder_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _valid_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _run_cli(["validate", "raw", "--no-cache"]) == 0
    assert f"KuaiRec files in {tmp_path / 'raw'}:" in capsys.readouterr().out


def test_validate_empty_directory_is_missing_data(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="no official KuaiRec file"):
        kuairec.validate_directory(tmp_path)


def test_official_schemas() -> None:
    assert set(kuairec.OFFICIAL_FILES) == {
        "big_matrix.csv",
        "small_matrix.csv",
        "item_categories.csv",
        "user_features.csv",
        "kuairec_caption_category.csv",
        "item_daily_features.csv",
        "social_network.csv",
    }
    assert kuairec.OFFICIAL_FILES["big_matrix.csv"].column_names == kuairec.INTERACTION_COLUMNS
    assert len(kuairec.OFFICIAL_FILES["user_features.csv"].columns) == 31
    assert kuairec.OFFICIAL_FILES["small_matrix.csv"].expected_rows == 4_676_570


def test_exact_duplicates_matches_pandas_on_random_rows() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 4, n).astype(np.int32),
            "video_id": rng.integers(0, 4, n).astype(np.int32),
            "play_duration": rng.integers(0, 3, n),
            "video_duration": rng.integers(1, 3, n),
            "time": pd.array(rng.choice(["a", "b", None], n), dtype="string"),
            "date": rng.choice([20200701.0, np.nan], n),
            "timestamp": rng.choice([1.5, 2.5, np.nan], n),
            "watch_ratio": rng.choice([0.5, 0.0, np.nan], n),
        }
    )
    expected = frame.duplicated(keep="first").to_numpy()
    assert 0 < expected.sum() < n
    for bucket in (None, ["user_id", "video_id", "play_duration", "timestamp"]):
        np.testing.assert_array_equal(
            kuairec.exact_duplicates(frame, kuairec.INTERACTION_COLUMNS, bucket), expected
        )


def test_local_dates_follow_asia_shanghai() -> None:
    # 1593878903.438 is 16:08 UTC on 4 July 2020 and 00:08 on 5 July in Shanghai (UTC+8).
    # 1988-05-31 12:00 UTC fell in China's daylight-saving period (UTC+9): 21:00 local, same day;
    # 1988-05-31 15:30 UTC is 00:30 on 1 June local (it would still be 31 May under a fixed UTC+8).
    seconds = np.array([1593878903.438, 581083200.0, 581095800.0])
    assert _local_yyyymmdd(seconds).tolist() == [20200705.0, 19880531.0, 19880601.0]
