"""Schema validation of every official KuaiRec file in a folder (``python -m sasrec validate DIR``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sasrec.data.kuairec.cleaning import CleaningReport, load_interactions
from sasrec.data.kuairec.readers import SIDE_READERS, find_file
from sasrec.data.kuairec.schema import INTERACTION_FILES, OFFICIAL_FILES, SEARCH_SUBDIRS, FileSchema
from sasrec.errors import MissingDataError


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
