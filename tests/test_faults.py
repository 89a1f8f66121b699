"""Fault injection: runs killed at every stage, damaged files, read-only folders, a full disk, two writers.

Runs alone: ``.venv/bin/python -m pytest tests/test_faults.py`` (about a minute on 2 cores).

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
stage to :data:`DRIVER` and :data:`KILL_STAGES`.

Training (``python -m sasrec train`` on tiny simulated data) is killed mid-epoch and mid-checkpoint-write,
its checkpoints are truncated and bit-flipped, and two runs of one run folder overlap; the promise there
is that ``--resume=true`` continues from the newest complete checkpoint to the very numbers of an
uninterrupted run, a damaged checkpoint is refused in one line or skipped, and the checkpoint and the
metrics JSON that remain belong to the same run. Notebooks: a papermill run killed during ``make``
leaves no executed notebook and the next ``make`` redoes it; a damaged metrics JSON is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
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
elif stage == "train-epoch":  # second batch of epoch 3: weights changed in memory, nothing of epoch 3 written
    from sasrec.training import loop
    current, batches = [0], [0]
    run_epoch, batch_loss_terms = loop.run_epoch, loop.batch_loss_terms
    def counted_epoch(run, epoch, **kwargs):
        current[0], batches[0] = epoch, 0
        return run_epoch(run, epoch, **kwargs)
    def counted_batch(*args, **kwargs):
        batches[0] += 1
        if current[0] == 3 and batches[0] == 2:
            pause()
        return batch_loss_terms(*args, **kwargs)
    loop.run_epoch, loop.batch_loss_terms = counted_epoch, counted_batch
elif stage == "train-checkpoint-write":  # epoch 3's resume checkpoint half written, not yet renamed
    import io, torch
    save = torch.save
    def half_save(payload, target, *args, **kwargs):
        if ".epoch=3." in str(target) and ".last.pth." in str(target):  # the temporary of atomic_path
            buffer = io.BytesIO()
            save(payload, buffer, *args, **kwargs)
            pathlib.Path(target).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            pause()
        return save(payload, target, *args, **kwargs)
    torch.save = half_save
elif stage == "train-hold":  # holds the run folder's lock at the start of epoch 2
    from sasrec.training import loop
    run_epoch = loop.run_epoch
    def held_epoch(run, epoch, **kwargs):
        if epoch == 2:
            pause()
        return run_epoch(run, epoch, **kwargs)
    loop.run_epoch = held_epoch

import sasrec.cli
# the real entry point with only the command run registered (the others would import more: slower)
sasrec.cli.COMMAND_MODULES = tuple(m for m in sasrec.cli.COMMAND_MODULES if m[0] == "sasrec.cli." + sys.argv[4])
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
        "OMP_NUM_THREADS": "1",  # training: one thread, as in this process (same floating-point sums)
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


# ------------------------------------------------------------------------------------------------ training
TRAIN = ["--dataset=small_matrix", "--maxlen=20", "--hidden_units=16", "--device=cpu", "--progress=false",
         "--batch_size=8", "--num_epochs=4"]  # fmt: skip
TRAIN_KILLS = ("train-epoch", "train-checkpoint-write")


@dataclass
class Trained:
    """An uninterrupted training run and the project roots of the faulty ones (each a copy of ``base``)."""

    base: Path  # prepared data and the uninterrupted run (train_dir reference)
    reference: dict  # its metrics JSON
    roots: dict[str, Path]  # stage -> project root of the killed (or held) run, train_dir "run"
    holder: subprocess.Popen[str]  # stage train-hold: paused at epoch 2 under the run folder's lock


def train_args(source: Path, train_dir: str, *more: str) -> list[str]:
    return ["train", f"--data-dir={source}", *TRAIN, f"--train_dir={train_dir}", *more]


def run_folder(root: Path, train_dir: str = "run") -> Path:
    return root / "models" / f"small_matrix_{train_dir}"


def checkpoints(folder: Path, kind: str) -> list[str]:
    """Names of the visible ``kind`` (best or last) checkpoints of ``folder``."""
    names = sorted(p.name for p in folder.glob("SASRec.epoch=*.pth") if not p.name.startswith("."))
    return [name for name in names if name.endswith(".last.pth") == (kind == "last")]


def numbers(metrics: dict) -> dict:
    """What a training run computed: best epoch, validation and test metrics, per-epoch losses."""
    log = [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["log"]]
    return {key: metrics[key] for key in ("best_epoch", "valid", "test", "epochs_run")} | {"log": log}


@pytest.fixture(scope="module")
def trained(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Start the faulty training runs (in parallel), run the uninterrupted one here meanwhile, kill them."""
    import torch

    from sasrec.cli import main
    from sasrec.evaluation.results import read_metrics_json

    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SASREC_ROOT", str(base))
        pipeline.load_prepared("small_matrix", data_dir=world.source)  # what train loads, prepared once
    roots, runs = {}, {}
    for stage in (*TRAIN_KILLS, "train-hold"):
        roots[stage] = tmp_path_factory.mktemp(stage)
        shutil.copytree(base / "data", roots[stage] / "data")
        metrics = ["--metrics_json=" + str(roots[stage] / "run.json")]
        runs[stage] = start(roots[stage], train_args(world.source, "run", *metrics), stage)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SASREC_ROOT", str(base))
            assert (
                main(train_args(world.source, "reference", f"--metrics_json={base / 'reference.json'}")) == 0
            )
        for stage in TRAIN_KILLS:
            wait_until_stopped(roots[stage], runs[stage])
            runs[stage].send_signal(signal.SIGKILL)
            runs[stage].communicate(timeout=60)
            assert runs[stage].returncode == -signal.SIGKILL
        wait_until_stopped(roots["train-hold"], runs["train-hold"])
        reference = read_metrics_json(base / "reference.json")
        yield Trained(base=base, reference=reference, roots=roots, holder=runs["train-hold"])
    finally:
        torch.set_num_threads(threads)
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()


@pytest.mark.parametrize("stage", TRAIN_KILLS)
def test_killed_training_resumes_from_the_newest_complete_checkpoint_to_the_same_numbers(
    world: World,
    trained: Trained,
    stage: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sasrec.cli import main
    from sasrec.evaluation.results import read_metrics_json
    from sasrec.training.checkpoints import read_checkpoint

    root = trained.roots[stage]
    folder = run_folder(root)
    # a complete state survives: the resume checkpoint of epoch 2 and the best weights verify (killed while
    # writing epoch 3's resume checkpoint, epoch 3's best weights may already be complete too)
    (last,) = checkpoints(folder, "last")
    assert last.startswith("SASRec.epoch=2.") and read_checkpoint(folder / last)["epoch"] == 2
    best_epochs = [read_checkpoint(folder / name)["epoch"] for name in checkpoints(folder, "best")]
    assert best_epochs and max(best_epochs) <= (3 if stage == "train-checkpoint-write" else 2)
    leftovers = [p.name for p in paths.find_temporaries(folder)]
    if (
        stage == "train-checkpoint-write"
    ):  # the half-written temporary is hidden, never taken for a checkpoint
        assert [name[: -len(".abcdefgh.tmp")] for name in leftovers] == [
            "." + last.replace(".epoch=2.", ".epoch=3.")
        ]
    else:
        assert leftovers == []
    assert not (root / "run.json").exists()

    monkeypatch.setenv("SASREC_ROOT", str(root))
    resumed = root / "resumed.json"
    assert main(train_args(world.source, "run", "--resume=true", f"--metrics_json={resumed}")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"resuming from {folder / last}\n")  # the next command says what it does
    assert "epoch   3  loss" in out and "epoch   2  loss" not in out
    assert numbers(read_metrics_json(resumed)) == numbers(trained.reference)  # exactly the uninterrupted run
    assert checkpoints(folder, "last")[0].startswith("SASRec.epoch=4.")
    reference_best = (
        run_folder(trained.base, "reference") / checkpoints(run_folder(trained.base, "reference"), "best")[0]
    )
    (best,) = checkpoints(folder, "best")
    assert read_checkpoint(folder / best)["digests"] == read_checkpoint(reference_best)["digests"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_weight(path: Path) -> None:
    """Flip one bit inside the stored bytes of the item embedding (the file still loads)."""
    from sasrec.training.checkpoints import read_checkpoint

    weights = read_checkpoint(path)["model_state"]["item_emb.weight"].numpy().tobytes()
    raw = bytearray(path.read_bytes())
    at = raw.find(weights[256:320])
    assert at > 0
    raw[at + 5] ^= 0x04
    path.write_bytes(bytes(raw))


def test_damaged_checkpoints_are_refused_in_one_line_or_skipped_by_resume(
    world: World, trained: Trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sasrec.cli import main
    from sasrec.evaluation.results import read_metrics_json

    root = trained.base
    monkeypatch.setenv("SASREC_ROOT", str(root))
    reference = run_folder(root, "reference")
    (best,) = checkpoints(reference, "best")
    (last,) = checkpoints(reference, "last")
    for damage, spoil, problem in (
        ("truncated", _truncate, "cannot be read (truncated or damaged: "),
        ("bit-flipped", _flip_a_weight, ": the model_state tensors do not match their recorded SHA-256 (the file "
                                        "is damaged); retrain, or resume from another checkpoint of the run"),
    ):  # fmt: skip
        damaged = root / f"{damage}.pth"
        shutil.copy(reference / best, damaged)
        spoil(damaged)
        capsys.readouterr()
        assert main(["train", f"--data-dir={world.source}", "--dataset=small_matrix", "--inference_only=true",
                     f"--state_dict_path={damaged}", "--device=cpu"]) == 2  # fmt: skip
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: checkpoint {damaged}") and problem in captured.err
        assert captured.err.count("\n") == 1 and "test" not in captured.out  # refused before evaluating

    # --resume=true skips a damaged newest .last.pth (epoch 5, bit-flipped) for the complete one (epoch 4)
    skip = run_folder(root, "skip")
    shutil.copytree(reference, skip)
    newer = skip / last.replace(".epoch=4.", ".epoch=5.")
    shutil.copy(skip / last, newer)
    _flip_a_weight(newer)
    metrics = root / "skip.json"
    assert main(train_args(world.source, "skip", "--resume=true", f"--metrics_json={metrics}")) == 0
    assert capsys.readouterr().out.startswith(f"resuming from {skip / last}\n")
    assert numbers(read_metrics_json(metrics)) == numbers(trained.reference)

    # ... and refuses in one line when no resume checkpoint is usable
    none = run_folder(root, "none")
    none.mkdir()
    shutil.copy(reference / last, none / last)
    _truncate(none / last)
    assert main(train_args(world.source, "none", "--resume=true")) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: no complete checkpoint to resume in {none} for {last.replace('.epoch=4', '').removesuffix('.last.pth')} "
        "(1 damaged); start without --resume or pass --state_dict_path\n"
    )


def test_two_training_runs_of_one_run_folder_never_mix(
    world: World, trained: Trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sasrec import integrity
    from sasrec.cli import main
    from sasrec.evaluation.results import metrics_made_by, read_metrics_json
    from sasrec.training.checkpoints import read_checkpoint

    root, holder = trained.roots["train-hold"], trained.holder
    monkeypatch.setenv("SASREC_ROOT", str(root))
    folder, metrics = run_folder(root), root / "run.json"
    second = train_args(world.source, "run", "--seed=1", f"--metrics_json={metrics}")
    assert main(second) == 2  # refused at once, in one line naming the holder
    err = capsys.readouterr().err
    assert err.startswith(f"error: run folder {folder} is being written by pid {holder.pid} since ")
    assert (
        err.endswith("; wait for it to finish, or pass --wait=true to wait for it\n") and err.count("\n") == 1
    )
    log = root / "waiting.stderr"
    with log.open("w") as stderr:
        waiting = start(root, [*second, "--wait=true"], stderr=stderr)
    try:
        deadline = time.monotonic() + 90
        while "waiting for run folder" not in log.read_text():  # it waits, saying for whom
            assert waiting.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        (root / "release").touch()
        holder_out, _ = holder.communicate(timeout=120)
        waiting_out, _ = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert holder.returncode == 0 and waiting.returncode == 0, log.read_text()
    assert log.read_text().startswith(f"waiting for run folder {folder} (held by pid {holder.pid} since ")
    assert "epoch   4  loss" in holder_out and "epoch   1  loss" in waiting_out  # one after the other
    # what remains is one run: the second one's checkpoints, and its metrics naming and holding them
    assert [len(checkpoints(folder, kind)) for kind in ("best", "last")] == [1, 1]
    payload, origin = read_metrics_json(metrics), metrics_made_by(metrics)
    checkpoint = Path(payload["checkpoint"])
    assert checkpoint.parent == folder and checkpoint.name == checkpoints(folder, "best")[0]
    assert origin["checkpoints"]["checkpoint"]["sha256"] == integrity.sha256_file(checkpoint)
    assert payload["config"]["seed"] == read_checkpoint(checkpoint)["config"]["seed"] == 1
    assert paths.find_temporaries(folder) == []


# ----------------------------------------------------------------------------------------------- notebooks
FAKE_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "id": "parameters", "metadata": {"tags": ["parameters"]}, "outputs": [],
         "execution_count": None, "source": "marker = ''\nrelease = ''"},
        {"cell_type": "code", "id": "work", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "import os, pathlib, time\npathlib.Path(marker).write_text(str(os.getpid()))\n"
                   "while not pathlib.Path(release).exists():\n    time.sleep(0.05)\nprint('ran to the end')"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}  # fmt: skip


def test_notebook_killed_during_make_leaves_no_executed_notebook_and_reruns(tmp_path: Path) -> None:
    """The Makefile's notebook rule on a tiny notebook: papermill killed mid-cell, then make again."""
    venv = Path(sys.prefix)
    if (
        shutil.which("make") is None
        or not (venv / ".installed").is_file()
        or not (venv / "bin" / "papermill").exists()
    ):
        pytest.skip("needs GNU make and the environment made by `make setup` (papermill, the python3 kernel)")
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / "fake").mkdir(parents=True)
    (root / "Makefile").symlink_to(PROJECT / "Makefile")
    (root / "pyproject.toml").touch()
    os.utime(root / "pyproject.toml", (1, 1))  # older than the venv: make does not reinstall
    (root / "notebooks" / "01_fake.ipynb").write_text(json.dumps(FAKE_NOTEBOOK))
    stamp = root / "data" / ".stamps" / "fake.data"  # the data step's stamp: the data have not changed
    stamp.parent.mkdir(parents=True)
    stamp.touch()
    os.utime(stamp, (1, 1))
    marker, release = tmp_path / "kernel.pid", tmp_path / "release"
    (root / "params" / "fake" / "01_fake.yaml").write_text(f"marker: {marker}\nrelease: {release}\n")
    target = "reports/fake/executed/01_fake.ipynb"
    # the real rule; only the package's sources and the data step (make report's) are left out
    command = [
        "make",
        "-C",
        str(root),
        target,
        "PROFILE=fake",
        f"VENV={venv}",
        "PKG_SRC=",
        "PY=true",
    ]
    env = {**os.environ, "SASREC_ROOT": str(root), "MAKEFLAGS": ""}
    make = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    kernel = 0
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            assert make.poll() is None and time.monotonic() < deadline, make.communicate()
            time.sleep(0.05)
        kernel = int(marker.read_text())
        os.killpg(make.pid, signal.SIGKILL)  # make, its shell and papermill, in the middle of the cell
        make.communicate(timeout=60)
        executed = root / target
        assert not executed.exists()  # no executed notebook under the final name
        assert executed.with_name("01_fake.ipynb.partial.ipynb").exists()

        release.touch()
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "== 01_fake (fake)" in again.stdout  # the next run redoes it
        assert "ran to the end" in executed.read_text()
        assert not executed.with_name("01_fake.ipynb.partial.ipynb").exists()
        assert (root / "reports" / "fake" / "html" / "01_fake.html").is_file()
        done = executed.stat().st_mtime_ns
        unchanged = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert unchanged.returncode == 0 and "== 01_fake" not in unchanged.stdout  # now it is left alone
        assert executed.stat().st_mtime_ns == done
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.communicate()
        if kernel:  # the kernel polls its parent and exits with it; make sure it has
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel, signal.SIGKILL)


# -------------------------------------------------------------------------------------------- metrics JSON
@pytest.mark.parametrize("damage", ["truncated", "hand-edited"])
def test_damaged_metrics_json_is_refused_by_every_reader(
    root: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import sasrec.cli
    from sasrec.evaluation.results import write_metrics_json
    from sasrec.study.context import Study, StudyPaths

    path = write_metrics_json(
        {"dataset": "small_matrix", "ndcg@10": 0.3125}, root / "reports" / "metrics" / "eda.json"
    )
    text = path.read_text()
    path.write_text(text[: len(text) - 50] if damage == "truncated" else text.replace("0.3125", "0.4125"))
    problem = (
        "is not valid JSON (" if damage == "truncated" else "does not match its checksum (edited or damaged)"
    )
    with pytest.raises(IntegrityError, match=re.escape(problem)):
        Study(paths=StudyPaths(reports_dir=str(root / "reports"))).load_json("eda")
    report_only = (("sasrec.cli.report", "add_parser"),)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sasrec.cli, "COMMAND_MODULES", report_only)
        assert sasrec.cli.main(["report", "summary", "--reports-dir", str(root / "reports")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: metrics file {path} ") and problem in err
    assert err.endswith("; run notebook 01_eda (make report) to rewrite it\n") and err.count("\n") == 1
    assert not (root / "reports" / "README.md").exists()  # nothing rendered from damaged numbers
