"""Fault injection: runs killed at every stage, damaged files, read-only folders, a full disk, two writers.

Runs alone: ``.venv/bin/python -m pytest tests/test_faults.py`` (well under a minute on 2 cores).

Every case checks the same three promises:

1. **a complete state survives**: after the fault, the target holds either its old or its new complete
   state (:func:`complete_params` verifies meta.json's seal and every artifact's checksum);
2. **the next command says what it did** (a logged line: removed leftovers, rebuilt a damaged file,
   waited for a lock) or refuses in one line (exit status 2);
3. **no number is wrong**: the data the next command returns equal a clean preparation's.

Killed runs go through the command line's entry point (``sasrec.cli.main(["prepare", ...])``) in a
subprocess started by :data:`DRIVER`, which patches one internal function of the package to stop at a
chosen point (a stage of the command) and wait there until the test SIGKILLs it; the package itself
holds no test hook. Other runs are plain ``python -m sasrec`` subprocesses. To add a case, add a
stage to :data:`DRIVER` and :data:`KILL_STAGES` (the training stage adds its own in the same way).
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from sasrec import paths
from sasrec.data import simulator
from sasrec.data.contracts import PreparedData
from sasrec.data.preparation import artifacts as prep_artifacts
from sasrec.data.preparation import pipeline
from sasrec.errors import IntegrityError, MissingDataError

pytestmark = pytest.mark.slow  # subprocesses killed at every stage: `pytest -m unit` leaves them out

PROJECT = Path(__file__).resolve().parents[1]
OLD = {"n_valid": 1, "n_test": 1}  # the complete state present before the faulty run
NEW = {"n_valid": 2, "n_test": 3}  # what the faulty run was asked to write
NEW_FLAGS = ["--n-valid", "2", "--n-test", "3"]

# Runs `python -m sasrec ARGS` after patching one function so that the run stops at STAGE and waits
# for RELEASE (a file) there; the test kills it with SIGKILL, or creates RELEASE to let it finish.
DRIVER = r"""
import os, pathlib, sys, time
stage, marker, release = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])

def pause():
    marker.write_text(str(os.getpid()))
    while not release.exists():
        time.sleep(0.05)

def stop_before(function):
    def wrapper(*args, **kwargs):
        pause()
        return function(*args, **kwargs)
    return wrapper

def stop_after(function):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        pause()
        return result
    return wrapper

from sasrec import integrity, paths
from sasrec.data.kuairec import cache
from sasrec.data.preparation import artifacts, pipeline

if stage == "read":  # parsing the CSV
    cache.read_validated_table = stop_before(cache.read_validated_table)
elif stage == "cache-write":  # the parquet cache's temporary file written, not yet renamed
    integrity.file_record = stop_before(integrity.file_record)
elif stage == "sequences":  # sequences and splits built, nothing written
    pipeline.prepare_frame = stop_after(pipeline.prepare_frame)
elif stage == "write":  # half of the artifacts in the temporary folder
    def half_written(data, folder, base):
        (folder / f"{base}.txt").write_text("1 1 0\n2 ")
        pause()
    artifacts._write_text_files = half_written
elif stage == "slow-write":  # waits, then writes normally
    artifacts._write_text_files = stop_before(artifacts._write_text_files)
elif stage == "swap":  # new folder swapped in, old one not yet deleted
    paths.exchange_paths = stop_after(paths.exchange_paths)
elif stage == "swap-fallback":  # no atomic exchange: old folder moved aside, new one not yet in place
    paths.exchange_paths = lambda first, second: False
    rename = os.replace
    def replace(source, destination, *args, **kwargs):
        rename(source, destination, *args, **kwargs)
        if pathlib.Path(destination).parent.name.endswith(".old"):
            pause()
    os.replace = replace

import sasrec.cli
# the real entry point with only the prepare command registered (the others would import torch: slower)
sasrec.cli.COMMAND_MODULES = tuple(m for m in sasrec.cli.COMMAND_MODULES if m[0] == "sasrec.cli.prepare")
sys.exit(sasrec.cli.main(sys.argv[4:]))
"""


# --------------------------------------------------------------------------------------------- helpers
@dataclass
class World:
    """A simulated source folder and the clean preparations every case is compared with."""

    source: Path
    clean: dict[str, PreparedData]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    source = tmp_path_factory.mktemp("source")
    simulator.simulate(scale=0.02, seed=0, out_dir=source, progress=False)
    clean_root = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SASREC_ROOT", str(clean_root))
        clean = {
            name: pipeline.prepare("small_matrix", data_dir=source, out_dir=clean_root / name, **params)
            for name, params in (("old", OLD), ("new", NEW))
        }
    yield World(source=source, clean=clean)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("SASREC_ROOT", str(project))
    monkeypatch.setenv("SASREC_PROGRESS", "0")
    return project


def target_of(root: Path) -> Path:
    return root / "data" / "processed" / "small_matrix"


def prepare_old_state(world: World, root: Path) -> Path:
    """The complete state before the fault (a cold parquet cache, so the faulty run reads the CSV)."""
    target = target_of(root)
    pipeline.prepare("small_matrix", data_dir=world.source, out_dir=target, **OLD)
    shutil.rmtree(root / "data" / "processed" / "cache")
    return target


def complete_params(folder: Path) -> dict | None:
    """The parameters of a complete prepared folder (seal and every checksum verified), else None."""
    try:
        meta = prep_artifacts.read_meta(folder)
    except (IntegrityError, MissingDataError):
        return None
    if prep_artifacts.check_artifacts(folder, meta):
        return None
    return {k: meta["params"][k] for k in ("n_valid", "n_test")}


def assert_same_numbers(data: PreparedData, clean: PreparedData) -> None:
    pd.testing.assert_frame_equal(data.events.reset_index(drop=True), clean.events.reset_index(drop=True))
    pd.testing.assert_frame_equal(data.labels.reset_index(drop=True), clean.labels.reset_index(drop=True))
    assert data.user_ids.tolist() == clean.user_ids.tolist()
    assert data.item_ids.tolist() == clean.item_ids.tolist()
    for key in ("counts", "leakage", "temporal_cuts"):
        assert as_json(data.meta[key]) == as_json(clean.meta[key])


def as_json(value: object) -> object:
    """``value`` as stored in meta.json (tuples become lists)."""
    return json.loads(json.dumps(value, default=prep_artifacts._json_default))


def sasrec_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("sasrec")]


def start(
    root: Path, args: list[str], stage: str | None = None, stderr: object = subprocess.PIPE, **popen: object
) -> subprocess.Popen[str]:
    """``python -m sasrec ARGS`` in a subprocess (through :data:`DRIVER` when ``stage`` is given)."""
    env = {
        **os.environ,
        "SASREC_ROOT": str(root),
        "SASREC_PROGRESS": "0",
        "PYTHONPATH": str(PROJECT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if stage is None:
        command = [sys.executable, "-m", "sasrec", *args]
    else:
        command = [sys.executable, "-c", DRIVER, stage, str(root / "stopped"), str(root / "release"), *args]
    return subprocess.Popen(
        command, env=env, cwd=root, stdout=subprocess.PIPE, stderr=stderr, text=True, **popen
    )


def wait_until_stopped(root: Path, process: subprocess.Popen[str], seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not (root / "stopped").exists():
        if process.poll() is not None:
            raise AssertionError(f"run ended before its stop point: {process.communicate()}")
        assert time.monotonic() < deadline, "the run never reached its stop point"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ killed runs
@dataclass(frozen=True)
class KillStage:
    """Where a run is killed, which complete states remain, and what the next command must log."""

    stage: str
    leftovers: int  # temporaries left beside the prepared folder or the cache entry
    at_target: str | None  # "old", "new" or None (then the old state waits in a .old folder)
    next_logs: tuple[str, ...]  # beginnings of lines the next command logs, in order


PREPARING = "preparing small_matrix into "
KILL_STAGES = [
    KillStage("read", 0, "old", (PREPARING,)),
    KillStage("cache-write", 1, "old", (PREPARING, "removed 1 stale temporary file(s) left beside ")),
    KillStage("sequences", 0, "old", (PREPARING,)),
    KillStage("write", 1, "old", ("removed 1 stale temporary file(s) left beside ", PREPARING)),
    KillStage("swap", 1, "new", ("removed 1 stale temporary file(s) left beside ",)),
    KillStage(
        "swap-fallback", 2, None, ("restored ", "removed 2 stale temporary file(s) left beside ", PREPARING)
    ),
]


@pytest.fixture(scope="module")
def killed(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every stage of :data:`KILL_STAGES` killed once, all runs in parallel; the project root of each."""
    roots, runs = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        for case in KILL_STAGES:
            root = tmp_path_factory.mktemp(f"killed-{case.stage}")
            patch.setenv("SASREC_ROOT", str(root))
            prepare_old_state(world, root)
            roots[case.stage] = root
            runs[case.stage] = start(
                root, ["prepare", "small_matrix", "--data-dir", str(world.source), *NEW_FLAGS], case.stage
            )
    try:
        for stage, run in runs.items():
            wait_until_stopped(roots[stage], run)
            run.send_signal(signal.SIGKILL)
            run.communicate(timeout=60)
            assert run.returncode == -signal.SIGKILL
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
    return roots


@pytest.mark.parametrize("case", KILL_STAGES, ids=[case.stage for case in KILL_STAGES])
def test_sigkill_leaves_a_complete_state_and_the_next_command_recovers(
    world: World,
    killed: dict[str, Path],
    case: KillStage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = killed[case.stage]
    monkeypatch.setenv("SASREC_ROOT", str(root))
    target = target_of(root)
    data_dir = root / "data"
    leftovers = paths.find_temporaries(data_dir)
    assert len(leftovers) == case.leftovers, leftovers
    states = {"old": OLD, "new": NEW}
    if case.at_target is not None:
        assert complete_params(target) == states[case.at_target]
    else:  # killed between the two renames of a non-atomic swap: the old complete state is set aside
        assert not target.exists()
        kept = [folder / target.name for folder in leftovers if folder.name.endswith(".old")]
        assert [complete_params(folder) for folder in kept] == [OLD]

    with caplog.at_level(logging.INFO, logger="sasrec"):
        data = pipeline.load_prepared("small_matrix", data_dir=world.source, **NEW)
    lines = sasrec_messages(caplog)
    assert [line for line in lines if line.startswith("waiting")] == []  # a dead holder blocks nobody
    assert len(lines) == len(case.next_logs), lines
    for line, beginning in zip(lines, case.next_logs, strict=True):
        assert line.startswith(beginning), (line, beginning)
    assert_same_numbers(data, world.clean["new"])
    assert complete_params(target) == NEW
    assert paths.find_temporaries(data_dir) == []


# ------------------------------------------------------------------------------------- damaged files
DAMAGES = {
    "truncated events.parquet": ("events.parquet", lambda b: b[: len(b) // 2], "bytes instead of"),
    "bit-flipped events.parquet": (
        "events.parquet",
        lambda b: b[:300] + bytes([b[300] ^ 0x01]) + b[301:],
        "events.parquet does not match its sha256",
    ),
    "bit-flipped items.parquet": (
        "items.parquet",
        lambda b: b[:-20] + bytes([b[-20] ^ 0x80]) + b[-19:],
        "items.parquet does not match its sha256",
    ),
    "truncated meta.json": ("meta.json", lambda b: b[:-30], "meta.json is not valid JSON"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_prepared_file_is_rebuilt_with_one_line(
    world: World, root: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    target = prepare_old_state(world, root)
    name, spoil, problem = DAMAGES[damage]
    (target / name).write_bytes(spoil((target / name).read_bytes()))
    assert complete_params(target) is None
    with caplog.at_level(logging.INFO, logger="sasrec"):
        data = pipeline.load_prepared("small_matrix", data_dir=world.source, **OLD)
    lines = sasrec_messages(caplog)
    assert len(lines) == 1 and "is damaged (" in lines[0] and problem in lines[0]
    assert lines[0].endswith(f"rebuilding it from {world.source / 'small_matrix.csv'}")
    assert_same_numbers(data, world.clean["old"])
    assert complete_params(target) == OLD


def test_damaged_parquet_cache_entry_is_rebuilt_with_one_line(
    world: World, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline.prepare("small_matrix", data_dir=world.source, **OLD)
    entry = next((root / "data" / "processed" / "cache").glob("small_matrix-*.parquet"))
    raw = entry.read_bytes()
    entry.write_bytes(raw[:1000] + bytes([raw[1000] ^ 0x04]) + raw[1001:])
    with caplog.at_level(logging.INFO, logger="sasrec"):
        data = pipeline.prepare("small_matrix", data_dir=world.source, **OLD)
    lines = sasrec_messages(caplog)
    assert (
        len(lines) == 1 and "parquet cache entry of" in lines[0] and "does not match its sha256" in lines[0]
    )
    assert_same_numbers(data, world.clean["old"])


# ------------------------------------------------------------------------------------ storage failures
def test_full_disk_keeps_the_old_state_and_says_so_in_one_line(
    world: World, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sasrec.cli
    from sasrec.cli import main

    # the real entry point with only the prepare command registered (the others would import torch)
    prepare_only = tuple(m for m in sasrec.cli.COMMAND_MODULES if m[0] == "sasrec.cli.prepare")
    monkeypatch.setattr(sasrec.cli, "COMMAND_MODULES", prepare_only)
    target = prepare_old_state(world, root)

    def disk_full(data: object, folder: Path, base: str) -> None:
        (folder / f"{base}.txt").write_text("1 1 0\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    original_writer = prep_artifacts._write_text_files
    monkeypatch.setattr(prep_artifacts, "_write_text_files", disk_full)
    capsys.readouterr()
    assert main(["prepare", "small_matrix", "--data-dir", str(world.source), *NEW_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not write prepared dataset small_matrix (")
    assert "the disk is full (ENOSPC); free space on the disk holding " in err[-1]
    assert complete_params(target) == OLD and paths.find_temporaries(root / "data") == []

    monkeypatch.setattr(prep_artifacts, "_write_text_files", original_writer)
    assert main(["prepare", "small_matrix", "--data-dir", str(world.source), *NEW_FLAGS]) == 0
    assert_same_numbers(
        pipeline.load_prepared("small_matrix", data_dir=world.source, **NEW), world.clean["new"]
    )


def drop_root_file_override() -> None:
    """In a child run as root: give up the right to ignore file permissions, as a normal user has none.

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before exec (prctl), so the
    program runs as root but is refused by a read-only folder like any user.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_read_only_output_folder_is_refused_before_any_work(
    world: World,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    as_user = {"preexec_fn": drop_root_file_override} if os.geteuid() == 0 else {}
    try:
        run = start(
            root,
            ["prepare", "small_matrix", "--data-dir", str(world.source), "--out", str(read_only / "x")],
            "none",
            **as_user,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run a child without root's file permissions here: {exc}")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2, (out, err)
    assert err.strip() == (
        f"error: prepared dataset small_matrix: cannot write {read_only / 'x'}: folder {read_only} is not "
        "writable; make it writable (chmod u+w) or choose another path"
    )
    assert list(read_only.iterdir()) == [] and not (root / "data").exists()  # refused before reading

    read_only.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="sasrec"):
        data = pipeline.load_prepared("small_matrix", data_dir=world.source, out_dir=read_only / "x", **OLD)
    assert sasrec_messages(caplog) == [f"preparing small_matrix into {read_only / 'x'}: not prepared yet"]
    assert_same_numbers(data, world.clean["old"])


# --------------------------------------------------------------------------------- concurrent writers
def test_two_concurrent_writers_wait_for_each_other(world: World, root: Path) -> None:
    target = prepare_old_state(world, root)
    args = ["prepare", "small_matrix", "--data-dir", str(world.source), *NEW_FLAGS]
    first = start(root, args, "slow-write")  # holds the folder's lock until released
    second_log = root / "second.stderr"
    try:
        wait_until_stopped(root, first)
        impatient = start(root, [*args, "--no-wait"], "none")
        _out, impatient_err = impatient.communicate(timeout=120)
        assert impatient.returncode == 2
        assert impatient_err.startswith(
            f"error: prepared dataset small_matrix {target} is being written by pid {first.pid} since "
        )
        assert "leave out --no-wait" in impatient_err and impatient_err.count("\n") == 1
        with second_log.open("w") as log:
            second = start(root, args, stderr=log)
            deadline = time.monotonic() + 90
            while "waiting for" not in second_log.read_text():  # it waits, saying for whom
                assert second.poll() is None and time.monotonic() < deadline, second_log.read_text()
                time.sleep(0.1)
            assert complete_params(target) == OLD  # nobody has touched the old state yet
            (root / "release").touch()
            first_out, _ = first.communicate(timeout=120)
            second_out, _ = second.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and second.returncode == 0, second_log.read_text()
    waiting = second_log.read_text().splitlines()[0]
    assert waiting.startswith(
        f"waiting for prepared dataset small_matrix {target} (held by pid {first.pid} since "
    )
    assert "written to" in first_out and "written to" in second_out
    assert complete_params(target) == NEW and paths.find_temporaries(root / "data") == []
    assert_same_numbers(
        pipeline.load_prepared("small_matrix", data_dir=world.source, **NEW), world.clean["new"]
    )
