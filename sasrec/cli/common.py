"""Small helpers shared by the command-line sub-commands: boolean flags and up-front input checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from sasrec.errors import ConfigError, MissingDataError
from sasrec.paths import user_path

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the flag, what was wrong, where --help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on stderr and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def str2bool(value: str | bool) -> bool:
    """Parse the original project's boolean flags (``--inference_only=true``)."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _dataset_names() -> list[str]:
    from sasrec.data.preparation.params import DATASETS, NO_REMAPPING_SUFFIX

    return [*DATASETS, *(name + NO_REMAPPING_SUFFIX for name in DATASETS)]


def kuairec_base(dataset: str) -> str | None:
    """``small_matrix`` for ``small_matrix`` or ``small_matrix_no_remapping``; None for a text file."""
    from sasrec.data.preparation.params import DATASETS, NO_REMAPPING_SUFFIX

    base = dataset.removesuffix(NO_REMAPPING_SUFFIX)
    return base if base in DATASETS else None


def dataset_argument(value: str, label: str = "--dataset", *, strict: bool = True) -> str:
    """A dataset typed on the command line: a KuaiRec name as is, a SASRec text file's absolute path.

    Args:
        value: ``small_matrix``, ``big_matrix``, either with ``_no_remapping``, or a text file's path
            (resolved from the current directory).
        label: how the message names the argument (``--dataset``, ``NAME``).
        strict: refuse an unknown name here; when False it is returned as is, for the loader to refuse.

    Raises:
        ConfigError: an unknown name, or a folder where a file was expected.
        MissingDataError: a path that does not exist.
    """
    if kuairec_base(value) is not None:
        return value
    named = f"{label}={value}" if label.startswith("-") else f"{label} {value!r}"
    path = user_path(value)
    if path.is_file():
        return str(path)
    expected = (
        f"expected one of {', '.join(_dataset_names())} or the path of a SASRec text file "
        "('user item' or 'user item liked' per line)"
    )
    if path.is_dir():
        raise ConfigError(f"{named}: {path} is a folder, not a SASRec text file; {expected}")
    if os.sep in value or "/" in value or Path(value).suffix:
        raise MissingDataError(f"{named}: SASRec text file {path} does not exist; {expected}")
    if not strict:
        return value
    raise ConfigError(f"{named}: unknown dataset; {expected}")


def check_data_dir(value: str | None, datasets: Iterable[str], label: str = "--data-dir") -> Path | None:
    """The folder of ``--data-dir`` (None when not given), refused unless it holds each KuaiRec dataset's CSV.

    The CSV may be in the folder, its ``data/`` or its ``KuaiRec 2.0/data/`` (as the loader looks).
    Text-file datasets need no folder.

    Raises:
        MissingDataError: the folder does not exist or lacks a needed CSV (one line naming the flag).
        ConfigError: the path is a file.
    """
    if not value:
        return None
    from sasrec.data.kuairec import find_file

    folder = user_path(value)
    hint = (
        "expected the folder of the KuaiRec CSVs (data/raw after `make data`, data/simulated after "
        "`make simulate`)"
    )
    if not folder.exists():
        raise MissingDataError(f"{label}={value}: folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise ConfigError(f"{label}={value}: {folder} is a file, not a folder; {hint}")
    for dataset in datasets:
        base = kuairec_base(dataset)
        if base is not None and find_file(folder, f"{base}.csv") is None:
            raise MissingDataError(
                f"{label}={value}: {base}.csv not found in {folder} (nor in its data/ or "
                f"'KuaiRec 2.0/data/'); {hint}, or omit {label} to use the default data"
            )
    return folder


def check_at_least(values: dict[str, object], minimum: int = 1) -> None:
    """Refuse, naming the flag, the first value that is not an integer >= ``minimum``.

    Args:
        values: flag (``--k``) -> value as parsed.
        minimum: the smallest allowed value.

    Raises:
        ConfigError: ``--k must be an integer >= 1; got 0``.
    """
    for flag, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{flag} must be an integer >= {minimum}; got {value!r}")


def features_argument(value: str) -> str:
    """A ``--features`` value: none, all or a comma list of groups (checked; lower case, no spaces)."""
    from sasrec.training.features import parse_features

    try:
        parse_features(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return ",".join(part.strip() for part in value.lower().split(","))
