"""A first run's mistakes: every command refuses bad arguments, missing inputs and outputs that cannot be
written in one line naming the flag or file, with exit status 2 and no traceback, before any work.

Each case runs ``sasrec.cli.main`` in-process with the project root in a temporary folder; none of them
reads data, trains or downloads anything (they are refused first).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from sasrec import paths
from sasrec.cli import main
from sasrec.errors import ConfigError, StorageError

#: The placeholders of the cases' arguments, filled per test from its temporary folder.
Case = tuple[list[str], list[str]]
HAS_PROC = Path("/proc").is_dir() and not Path("/proc/nope").exists()
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="no /proc on this system")


@pytest.fixture
def places(root: Path, tmp_path: Path) -> dict[str, str]:
    """Paths the cases name: a regular file, an empty folder, a folder holding (empty) KuaiRec CSVs."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    for name in ("small_matrix.csv", "big_matrix.csv"):
        (csvs / name).write_text("")  # found, never read: the refusals come first
    checkpoint = tmp_path / "some.pth"
    checkpoint.write_bytes(b"")  # exists; the refusals come before it is read
    return {
        "FILE": str(regular),
        "EMPTY": str(empty),
        "CSVS": str(csvs),
        "MISSING": str(tmp_path / "missing"),
        "PTH": str(checkpoint),
        "ROOT": str(root),
    }


def _fill(argv: list[str], places: dict[str, str]) -> list[str]:
    filled = []
    for arg in argv:
        for key, value in places.items():
            arg = arg.replace(f"<{key}>", value)
        filled.append(arg)
    return filled


def _refused(
    argv: list[str], needles: list[str], places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> str:
    """Run the command; assert exit 2, one line on stderr naming every needle, nothing written."""
    try:
        code = main(_fill(argv, places))
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, captured.err)
    assert "Traceback" not in captured.err
    assert len(err.splitlines()) == 1, err
    for needle in _fill(needles, places):
        assert needle in err, (needle, err)
    root = Path(places["ROOT"])
    assert not (root / "models").exists() and not (root / "data").exists()  # refused before any work
    return err


# ------------------------------------------------------------------------------------------------ train
TRAIN_CASES = {
    "unknown dataset": (["train", "--dataset=no_such_matrix"], ["--dataset=no_such_matrix", "unknown dataset"]),
    "missing text file": (["train", "--dataset=<MISSING>.txt"], ["--dataset=", "does not exist"]),
    "data-dir missing": (["train", "--dataset=small_matrix", "--data-dir=<MISSING>"], ["--data-dir=", "does not exist"]),
    "data-dir is a file": (["train", "--dataset=small_matrix", "--data-dir=<FILE>"], ["--data-dir=", "is a file"]),
    "data-dir lacks the CSV": (["train", "--dataset=small_matrix", "--data-dir=<EMPTY>"], ["--data-dir=", "small_matrix.csv not found"]),
    "missing checkpoint": (["train", "--dataset=small_matrix", "--state_dict_path=<MISSING>.pth", "--inference_only=true"],
                           ["--state_dict_path=", "does not exist"]),
    "checkpoint is a folder": (["train", "--dataset=small_matrix", "--state_dict_path=<EMPTY>", "--inference_only=true"],
                               ["--state_dict_path=", "is a folder"]),
    "missing resume checkpoint": (["train", "--dataset=small_matrix", "--state_dict_path=<MISSING>.pth", "--resume=true"],
                                  ["--state_dict_path=", "does not exist"]),
    "missing config file": (["train", "--dataset=small_matrix", "--config=<MISSING>.yaml"], ["--config=", "does not exist"]),
    "zero batch_size": (["train", "--dataset=small_matrix", "--batch_size=0"], ["batch_size", ">= 1", "got 0"]),
    "negative batch_size": (["train", "--dataset=small_matrix", "--batch_size=-4"], ["batch_size", "got -4"]),
    "zero num_epochs": (["train", "--dataset=small_matrix", "--num_epochs=0"], ["num_epochs", ">= 1"]),
    "negative lr": (["train", "--dataset=small_matrix", "--lr=-1"], ["lr must be in (0.0, inf)", "got -1.0"]),
    "zero k": (["train", "--dataset=small_matrix", "--k=0"], ["k must be an integer >= 1"]),
    "zero k of an evaluation": (["train", "--dataset=small_matrix", "--state_dict_path=<PTH>", "--inference_only=true", "--k=0"],
                                ["k must be an integer >= 1"]),
    "zero top_n": (["train", "--dataset=small_matrix", "--top_n=0"], ["top_n", "got 0"]),
    "unknown model": (["train", "--dataset=small_matrix", "--model=nosuch"], ["--model", "invalid choice", "--help"]),
    "not an integer": (["train", "--dataset=small_matrix", "--batch_size=abc"], ["--batch_size", "invalid int value"]),
    "no dataset": (["train", "--train_dir=x"], ["--dataset is required"]),
    "metrics under a file": (["train", "--dataset=small_matrix", "--metrics_json=<FILE>/m.json"],
                             ["--metrics_json", "<FILE> is a file"]),
    "metrics of an evaluation under a file": (
        ["train", "--dataset=small_matrix", "--state_dict_path=<PTH>", "--inference_only=true", "--metrics_json=<FILE>/m.json"],
        ["--metrics_json", "<FILE> is a file"]),
    "metrics under /proc": (["train", "--dataset=small_matrix", "--metrics_json=/proc/nope/x.json"],
                            ["--metrics_json", "/proc/nope", "does not accept new folders"]),
}  # fmt: skip

# ---------------------------------------------------------------------------------------------- baseline
BASELINE_CASES = {
    "unknown dataset": (["baseline", "--dataset=nosuch", "--model=pop"], ["--dataset=nosuch", "unknown dataset"]),
    "missing text file": (["baseline", "--dataset=<MISSING>.txt", "--model=pop"], ["--dataset=", "does not exist"]),
    "data-dir missing": (["baseline", "--dataset=small_matrix", "--model=pop", "--data-dir=<MISSING>"],
                         ["--data-dir=", "does not exist"]),
    "data-dir lacks the CSV": (["baseline", "--dataset=small_matrix", "--model=pop", "--data-dir=<EMPTY>"],
                               ["--data-dir=", "small_matrix.csv not found"]),
    "unknown model": (["baseline", "--dataset=small_matrix", "--model=nosuch"], ["--model", "invalid choice"]),
    "zero k": (["baseline", "--dataset=small_matrix", "--model=pop", "--k=0"], ["--k must be an integer >= 1"]),
    "zero batch_size": (["baseline", "--dataset=small_matrix", "--model=pop", "--batch_size=0"], ["--batch_size", "got 0"]),
    "negative batch_size": (["baseline", "--dataset=small_matrix", "--model=pop", "--batch_size=-2"], ["--batch_size", "got -2"]),
    "zero top_n": (["baseline", "--dataset=small_matrix", "--model=pop", "--top_n=0"], ["--top_n", "got 0"]),
    "zero sampled negatives": (["baseline", "--dataset=small_matrix", "--model=pop", "--eval_protocol=sampled",
                                "--num_eval_negatives=0"], ["--num_eval_negatives", "got 0"]),
    "metrics under a file": (["baseline", "--dataset=small_matrix", "--model=pop", "--metrics_json=<FILE>/m.json"],
                             ["--metrics_json", "<FILE> is a file"]),
    "metrics under /proc": (["baseline", "--dataset=small_matrix", "--model=pop", "--metrics_json=/proc/nope/x.json"],
                            ["--metrics_json", "/proc/nope"]),
    "recommendations under a file": (["baseline", "--dataset=small_matrix", "--model=pop", "--generate_recommendations",
                                      "--recommendations_path=<FILE>/recs"], ["--recommendations_path", "<FILE> is a file"]),
    "recommendations under /proc": (["baseline", "--dataset=small_matrix", "--model=pop", "--generate_recommendations",
                                     "--recommendations_path=/proc/nope/recs"], ["--recommendations_path", "/proc/nope"]),
}  # fmt: skip

# ----------------------------------------------------------------------------------------------- prepare
PREPARE_CASES = {
    "unknown dataset": (["prepare", "nosuch"], ["NAME 'nosuch'", "unknown dataset"]),
    "missing text file": (["prepare", "<MISSING>.txt"], ["SASRec text file", "does not exist"]),
    "data-dir missing": (["prepare", "small_matrix", "--data-dir=<MISSING>"], ["--data-dir=", "does not exist"]),
    "data-dir lacks the CSV": (["prepare", "small_matrix", "--data-dir=<EMPTY>"], ["--data-dir=", "small_matrix.csv not found"]),
    "out under a file": (["prepare", "small_matrix", "--data-dir=<CSVS>", "--out=<FILE>/x"],
                         ["prepared dataset small_matrix", "<FILE> is a file"]),
    "out under /proc": (["prepare", "small_matrix", "--data-dir=<CSVS>", "--out=/proc/nope/x"],
                        ["prepared dataset small_matrix", "/proc/nope"]),
    "negative n-valid": (["prepare", "small_matrix", "--data-dir=<CSVS>", "--n-valid=-1"], ["n_valid", "got -1"]),
    "not a number": (["prepare", "small_matrix", "--n-test=x"], ["--n-test", "invalid int value"]),
}  # fmt: skip

# ------------------------------------------------------------------------ simulate, download, validate, ...
OTHER_CASES = {
    "simulate: zero scale": (["simulate", "--scale=0", "--out=<EMPTY>/sim"], ["scale", "got 0.0"]),
    "simulate: negative seed": (["simulate", "--seed=-1", "--out=<EMPTY>/sim"], ["seed", "got -1"]),
    "simulate: out under a file": (["simulate", "--out=<FILE>/sim"], ["--out", "<FILE> is a file"]),
    "simulate: out under /proc": (["simulate", "--out=/proc/nope/sim"], ["--out", "/proc/nope"]),
    "download: missing archive": (["download", "--archive=<MISSING>.zip", "--dest=<EMPTY>/raw"], ["--archive=", "does not exist"]),
    "download: dest under a file": (["download", "--dest=<FILE>/raw"], ["--dest", "<FILE> is a file"]),
    "download: dest under /proc": (["download", "--dest=/proc/nope/raw"], ["--dest", "/proc/nope"]),
    "download: zero timeout": (["download", "--timeout=0", "--dest=<EMPTY>/raw"], ["--timeout", "got 0.0"]),
    "validate: missing folder": (["validate", "<MISSING>"], ["<MISSING>", "does not exist"]),
    "validate: a file": (["validate", "<FILE>"], ["<FILE> is a file"]),
    "validate: no KuaiRec file": (["validate", "<EMPTY>"], ["no official KuaiRec file found in <EMPTY>"]),
    "unknown command": (["nosuch"], ["invalid choice: 'nosuch'", "python -m sasrec --help"]),
    "no command": ([], ["required: COMMAND"]),
    "report: unknown step": (["report", "nosuch"], ["invalid choice: 'nosuch'"]),
}  # fmt: skip


def _parametrize(cases: dict[str, Case]) -> Callable:
    params = [
        pytest.param(argv, needles, id=name, marks=[needs_proc] if "/proc" in " ".join(argv) else [])
        for name, (argv, needles) in cases.items()
    ]
    return pytest.mark.parametrize(("argv", "needles"), params)


@_parametrize(TRAIN_CASES)
def test_train_refuses_in_one_line(argv, needles, places, capsys) -> None:
    _refused(argv, needles, places, capsys)


@_parametrize(BASELINE_CASES)
def test_baseline_refuses_in_one_line(argv, needles, places, capsys) -> None:
    _refused(argv, needles, places, capsys)


@_parametrize(PREPARE_CASES)
def test_prepare_refuses_in_one_line(argv, needles, places, capsys) -> None:
    _refused(argv, needles, places, capsys)


@_parametrize(OTHER_CASES)
def test_other_commands_refuse_in_one_line(argv, needles, places, capsys) -> None:
    _refused(argv, needles, places, capsys)


# ------------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("where", [pytest.param("proc", marks=needs_proc), "under_a_file"])
def test_check_writable_tries_the_folder_a_writer_would_create(tmp_path: Path, where: str) -> None:
    if where == "proc":
        target, message = Path("/proc/nope/x.json"), "cannot create folder /proc/nope: /proc does not accept"
    else:
        (tmp_path / "file").write_text("x")
        target, message = tmp_path / "file" / "sub" / "x.json", f"{tmp_path / 'file'} is a file"
    with pytest.raises(ConfigError) as caught:
        paths.check_writable(target, "metrics file (--metrics_json)")
    text = str(caught.value)
    assert text.startswith("metrics file (--metrics_json): ") and message in text and "\n" not in text
    # a path that can be written passes and leaves nothing behind (the probe is removed)
    assert paths.check_writable(tmp_path / "new" / "deeper" / "x.json", "metrics file") == (
        tmp_path / "new" / "deeper" / "x.json"
    )
    assert paths.check_writable(tmp_path, "output folder", folder=True) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == (["file"] if where != "proc" else [])


@pytest.mark.parametrize("where", [pytest.param("proc", marks=needs_proc), "under_a_file"])
@pytest.mark.parametrize("writer", ["atomic_path", "atomic_dir"])
def test_atomic_writes_turn_an_impossible_parent_into_a_storage_error(
    tmp_path: Path, where: str, writer: str
) -> None:
    if where == "proc":
        target, message = Path("/proc/nope/x.json"), "cannot create folder /proc/nope: /proc does not accept"
    else:
        (tmp_path / "file").write_text("x")
        target, message = tmp_path / "file" / "x.json", f"cannot create folder {tmp_path / 'file'}: "
    with pytest.raises(StorageError) as caught, getattr(paths, writer)(target, "metrics file"):
        pytest.fail("the block must not run")
    text = str(caught.value)
    assert text.startswith(f"could not write metrics file ({target}): ") and message in text
    assert text.endswith("choose another path") and "\n" not in text
    assert isinstance(caught.value, OSError) and caught.value.errno in (
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EEXIST,
    )


def test_an_error_of_the_block_keeps_its_type(tmp_path: Path) -> None:
    """Only creating the parent and the temporary is the storage's fault; the caller's errors are its own."""
    with pytest.raises(FileNotFoundError), paths.atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{")
        (tmp_path / "no" / "input.csv").read_text()
    assert list(tmp_path.iterdir()) == []
