"""Tests of ``python -m sasrec doctor`` (sasrec.study.doctor) on temporary project roots."""

from __future__ import annotations

import argparse
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from sasrec import locks
from sasrec.data import kuairec, simulator
from sasrec.data.preparation import pipeline
from sasrec.study import doctor
from sasrec.study.doctor import DoctorContext, Finding


@pytest.fixture
def prepared(root: Path) -> Path:
    """Simulated data in data/simulated and small_matrix prepared from it."""
    simulator.simulate(scale=0.02, seed=0, out_dir=root / "data" / "simulated", progress=False)
    pipeline.load_prepared("small_matrix", n_valid=2, n_test=3)
    return root / "data" / "processed" / "small_matrix"


def run_doctor(argv: list[str]) -> int:
    """``python -m sasrec doctor`` with only that sub-command registered."""
    from sasrec.cli import doctor as doctor_cli

    parser = argparse.ArgumentParser(prog="python -m sasrec")
    doctor_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def lines_of(check: doctor.Check, root: Path, quick: bool = False) -> list[str]:
    return [finding.line() for finding in check(DoctorContext(root=root, quick=quick))]


def test_healthy_project_exits_zero(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_doctor(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "all well" or out[-1].endswith("warning(s)")
    assert not any(line.startswith("FAIL") for line in out)
    topics = " ".join(out)
    for expected in (
        "python: 3.11",
        "torch: ",
        "numpy: ",
        "pandas: ",
        "pyarrow: ",
        "device: ",
        "free disk in data/",
    ):
        assert expected in topics
    assert "ok   data/simulated: simulated data (scale 0.02, seed 0)" in out
    assert any(
        line.startswith("ok   data/processed/small_matrix: small_matrix: ") and "checksums verified" in line
        for line in out
    )
    assert "ok   temporary files: none left by interrupted runs" in out
    assert "ok   locks: none held (no command is writing)" in out
    assert (
        "note data/raw: no real KuaiRec archive (the simulator's data are used); `make data` fetches it"
        in out
    )


def test_damaged_prepared_dataset_needs_fixing(prepared: Path, root: Path) -> None:
    events = prepared / "events.parquet"
    raw = events.read_bytes()
    events.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    findings = doctor.prepared_findings(DoctorContext(root=root))
    assert [f.status for f in findings] == ["fail"] and doctor.exit_status(findings) == 1
    assert findings[0].line() == (
        "FAIL data/processed/small_matrix: events.parquet does not match its sha256 (damaged) -> fix: "
        f"python -m sasrec prepare small_matrix --data-dir {root / 'data' / 'simulated'} "
        "--out data/processed/small_matrix --n-valid 2 --n-test 3"
    )
    # --quick compares sizes only: it cannot see a flipped byte, but sees a truncated file
    assert [f.status for f in doctor.prepared_findings(DoctorContext(root=root, quick=True))] == ["ok"]
    events.write_bytes(raw[:10])
    assert "events.parquet has 10 bytes instead of" in lines_of(doctor.prepared_findings, root, quick=True)[0]
    assert run_doctor(["doctor", "--quick"]) == 1


def test_source_gone_and_stale_cache_are_warnings(prepared: Path, root: Path) -> None:
    shutil.rmtree(root / "data" / "simulated")
    assert lines_of(doctor.prepared_findings, root)[0].startswith(
        "warn data/processed/small_matrix: intact, but its source "
    )
    cache_lines = lines_of(doctor.cache_findings, root)
    assert cache_lines[0].startswith("warn data/processed/cache: 1 stale entry: small_matrix-")
    assert "(source gone)" in cache_lines[0] and cache_lines[0].endswith(
        "-> fix: pruned at the next read; or delete them"
    )
    assert cache_lines[-1] == "ok   data/processed/cache: 0 valid entries"
    simulated = lines_of(doctor.simulated_data_findings, root)
    assert simulated == [
        "FAIL data: no interaction data: neither data/raw nor data/simulated -> fix: make simulate (or make data)"
    ]


def test_leftovers_and_held_locks(prepared: Path, root: Path) -> None:
    leftover = prepared.parent / ".small_matrix.abcd1234.tmp"
    leftover.mkdir()
    notebook = root / "reports" / "executed" / "03_train.ipynb.partial.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}")
    lines = lines_of(doctor.temporary_findings, root)
    assert lines == [
        "warn temporary files: 2 left by interrupted runs: data/processed/.small_matrix.abcd1234.tmp, "
        "reports/executed/03_train.ipynb.partial.ipynb -> fix: the next run writing the same target removes "
        "them; or delete them (unless a command is running now)"
    ]
    with locks.locked(prepared, what="prepared dataset small_matrix") as holder:
        held = lines_of(doctor.lock_findings, root)
        assert held == [f"note locks: data/processed/small_matrix is locked by {holder.describe()}"]
        # a temporary whose target is being written belongs to a running command: not reported
        assert lines_of(doctor.temporary_findings, root)[0].startswith("warn temporary files: 1 left")


def test_raw_archive_is_checked_against_the_official_counts(root: Path) -> None:
    raw = root / "data" / "raw" / "KuaiRec 2.0" / "data"
    raw.mkdir(parents=True)
    header = ",".join(kuairec.INTERACTION_COLUMNS)
    row = "1,10,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.27"
    (raw / "big_matrix.csv").write_text(f"{header}\n{row}\n")
    (raw / "small_matrix.csv").write_text("user_id,video_id\n1,2\n")
    lines = lines_of(doctor.raw_data_findings, root)
    by_file = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in lines}
    assert by_file["big_matrix.csv"].startswith(
        "FAIL data/raw/big_matrix.csv: 1 rows, the official file has 12,530,806"
    )
    assert "missing column(s)" in by_file["small_matrix.csv"] and by_file["small_matrix.csv"].startswith(
        "FAIL"
    )
    assert by_file["social_network.csv"].startswith(
        "FAIL data/raw/social_network.csv: absent -> fix: make data"
    )
    assert doctor.exit_status(doctor.raw_data_findings(DoctorContext(root=root))) == 1


def test_versions_and_disk(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    monkeypatch.setattr(doctor, "_pins", lambda: {"numpy": "0.0.1", "pandas": "99"})
    lines = lines_of(doctor.version_findings, root)
    assert any(
        line.startswith("warn numpy: ") and "the project pins 0.0.1 -> fix: make setup" in line
        for line in lines
    )
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.paths.shutil, "disk_usage", lambda path: usage(10, 10, 2**29))
    disk = lines_of(doctor.disk_findings, root)
    assert disk[0].startswith("FAIL free disk in data/: 0.5 GiB -> fix: free space")


def test_checks_are_extensible_and_a_crashing_check_is_reported(root: Path) -> None:
    def checkpoints(context: DoctorContext) -> list[Finding]:
        return [Finding("warn", "checkpoints", f"{context.rel(context.models_dir)} is empty")]

    def broken(context: DoctorContext) -> list[Finding]:
        raise RuntimeError("disk\nunreadable")

    findings = doctor.run_checks(DoctorContext(root=root), [("checkpoints", checkpoints), ("broken", broken)])
    assert [f.line() for f in findings] == [
        "warn checkpoints: models is empty",
        "FAIL broken: the check itself failed: RuntimeError: disk unreadable",
    ]
    assert doctor.exit_status(findings) == 1 and doctor.exit_status(findings[:1]) == 0
    before = list(doctor.CHECKS)
    try:
        doctor.register_check("checkpoints")(checkpoints)
        doctor.register_check("checkpoints")(checkpoints)  # registering again replaces
        assert [name for name, _ in doctor.CHECKS].count("checkpoints") == 1
        assert doctor.CHECKS[-1] == ("checkpoints", checkpoints)
    finally:
        doctor.CHECKS[:] = before
