"""Schema validation of every official KuaiRec file in a folder (``python -m sasrec validate DIR``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sasrec.data.kuairec.cleaning import CleaningReport, load_interactions
from sasrec.data.kuairec.readers import SIDE_READERS, find_file
from sasrec.data.kuairec.schema import INTERACTION_FILES, OFFICIAL_FILES, SEARCH_SUBDIRS, FileSchema
from sasrec.errors import DataValidationError, MissingDataError


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
    error: str | None = None

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
        """Official files found (valid or not)."""
        return [check.name for check in self.checks if check.present]

    @property
    def invalid(self) -> list[FileCheck]:
        """Checks of the files found invalid (each with its one-line ``error``)."""
        return [check for check in self.checks if check.error]

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
                    "error": c.error,
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
            if check.error:
                lines.append(f"  {check.name:<{width}}  INVALID: {check.error}")
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
        verdict = f"{len(self.invalid)} invalid" if self.invalid else "all valid"
        lines.append(
            f"{len(self.present)} of {len(self.checks)} official files present, {verdict} "
            f"({len(self.warnings)} warning(s))"
        )
        return "\n".join(lines)

    def error_message(self) -> str | None:
        """One line naming every invalid file and its problem, or None when all present files are valid."""
        if not self.invalid:
            return None
        problems = " | ".join(check.error or "" for check in self.invalid)
        return f"{len(self.invalid)} invalid official file(s) in {self.data_dir}: {problems}"


def _row_warning(name: str, rows: int, schema: FileSchema) -> str | None:
    if schema.expected_rows is None or rows == schema.expected_rows:
        return None
    qualifier = "" if schema.rows_exact else " (approximate official count)"
    return (
        f"{name} has {rows:,} rows, the official file has {schema.expected_rows:,}{qualifier}: "
        "a subset, a simulated file or an incomplete download"
    )


def validate_directory(
    data_dir: Path, *, cache: bool = True, cache_dir: Path | None = None, raise_errors: bool = True
) -> ValidationSummary:
    """Validate every official KuaiRec file present under ``data_dir`` and list the absent ones.

    Row counts that differ from the official ones are warnings (the simulator writes smaller files); a
    schema or value problem, or a file with a header and no data row, makes the file invalid. Every file
    is checked (one bad file does not hide the next). The two matrices also get a cleaning report.

    Args:
        data_dir: the folder (files may also sit in ``data/`` or ``KuaiRec 2.0/data/`` below it).
        cache: read the matrices through the parquet cache.
        cache_dir: the cache folder (default ``data/processed/cache``).
        raise_errors: raise when a file is invalid; when False, the summary's checks carry the errors.

    Raises:
        MissingDataError: ``data_dir`` does not exist or holds no official file.
        DataValidationError: (``raise_errors``) one line naming every invalid file and its problem.
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
        try:
            if name in INTERACTION_FILES:
                _frame, report = load_interactions(found, cache=cache, cache_dir=cache_dir)
                cleaning[name] = report
                check.rows = report.rows_in
            else:
                check.rows = len(SIDE_READERS[name](found))
        except DataValidationError as exc:
            check.error = str(exc)
            continue
        finally:
            check.seconds = time.perf_counter() - started
        if check.rows == 0:
            expected = f"{schema.expected_rows:,}" if schema.expected_rows else "some"
            check.error = f"{found}: a header and no data row; expected {expected} rows"
            continue
        check.warning = _row_warning(name, check.rows, schema)
    summary = ValidationSummary(data_dir=data_dir, checks=checks, cleaning=cleaning)
    if not summary.present:
        looked = ", ".join(str(data_dir.joinpath(*parts)) for parts in SEARCH_SUBDIRS)
        raise MissingDataError(
            f"no official KuaiRec file found in {data_dir} (looked in {looked}); "
            "run `python -m sasrec download` or `make data`"
        )
    message = summary.error_message()
    if raise_errors and message:
        raise DataValidationError(message)
    return summary
