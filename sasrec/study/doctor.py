"""``python -m sasrec doctor``: what is wrong with this checkout's environment and data, and how to fix it.

Each check is a small function ``check(context) -> list[Finding]`` registered in :data:`CHECKS` (with
:func:`register_check`); :func:`run_checks` runs them all, turning a crashing check into a finding, and
:func:`exit_status` gives 0 when nothing needs fixing and 1 otherwise. Later stages add their own checks
(e.g. checkpoints under ``models/``) by registering a function::

    @register_check("checkpoints")
    def checkpoint_findings(context: DoctorContext) -> list[Finding]: ...

Statuses: ``ok``; ``note`` (information); ``warn`` (worth knowing, handled automatically by the next
command, such as a stale temporary file); ``fail`` (needs fixing: the line says how).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sasrec import locks, paths
from sasrec.errors import IntegrityError, MissingDataError, SasrecError, UnsealedError

Status = Literal["ok", "note", "warn", "fail"]
_LABELS = {"ok": "ok  ", "note": "note", "warn": "warn", "fail": "FAIL"}
_PACKAGES = ("torch", "numpy", "pandas", "pyarrow")
_DIST_NAME = "sasrec-kuairec"
_FAIL_GIB = 1.0
_WARN_GIB = 5.0


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: status, topic, what was found and how to fix it."""

    status: Status
    topic: str
    message: str
    fix: str = ""

    @property
    def needs_fixing(self) -> bool:
        """Whether this finding makes ``doctor`` exit with status 1."""
        return self.status == "fail"

    def line(self) -> str:
        """``FAIL prepared data: ... -> fix: ...`` on one line."""
        text = f"{_LABELS[self.status]} {self.topic}: {self.message}"
        return f"{text} -> fix: {self.fix}" if self.fix else text


@dataclass
class DoctorContext:
    """What the checks look at: the project root's folders, and whether to skip slow content checks."""

    root: Path = field(default_factory=paths.project_root)
    quick: bool = False

    @property
    def data_dir(self) -> Path:
        """``<root>/data``."""
        return self.root / "data"

    @property
    def models_dir(self) -> Path:
        """``<root>/models``."""
        return self.root / "models"

    @property
    def reports_dir(self) -> Path:
        """``<root>/reports``."""
        return self.root / "reports"

    def rel(self, path: Path) -> str:
        """``path`` relative to the root when below it (shorter lines)."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)


Check = Callable[[DoctorContext], list[Finding]]
#: Registered checks, in report order: (name, function).
CHECKS: list[tuple[str, Check]] = []


def register_check(name: str) -> Callable[[Check], Check]:
    """Decorator adding a check to :data:`CHECKS` (a name registered again replaces the earlier one)."""

    def decorate(function: Check) -> Check:
        CHECKS[:] = [(n, f) for n, f in CHECKS if n != name]
        CHECKS.append((name, function))
        return function

    return decorate


def run_checks(
    context: DoctorContext | None = None, checks: list[tuple[str, Check]] | None = None
) -> list[Finding]:
    """Run every check; a check that crashes becomes a ``fail`` finding naming the error."""
    context = context or DoctorContext()
    findings: list[Finding] = []
    for name, check in checks if checks is not None else CHECKS:
        try:
            findings.extend(check(context))
        except Exception as exc:  # a broken check must not hide the others
            message = " ".join(str(exc).split())
            findings.append(
                Finding("fail", name, f"the check itself failed: {type(exc).__name__}: {message}")
            )
    return findings


def exit_status(findings: list[Finding]) -> int:
    """0 when nothing needs fixing, 1 otherwise."""
    return 1 if any(finding.needs_fixing for finding in findings) else 0


# ------------------------------------------------------------------------------------- environment
def _pins() -> dict[str, str]:
    """Pinned versions ``{package: version}`` of the installed project (else of pyproject.toml)."""
    requirements: list[str] = []
    try:
        requirements = importlib.metadata.requires(_DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        pyproject = paths.project_root() / "pyproject.toml"
        if pyproject.is_file():
            import tomllib

            requirements = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)\s*(;.*)?$", requirement)
        if match and not (match.group(3) or "").strip().startswith("; extra"):
            pins[match.group(1).lower()] = match.group(2)
    return pins


@register_check("versions")
def version_findings(context: DoctorContext) -> list[Finding]:
    """Python and the main packages against the project's pins."""
    findings = []
    python = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] == (3, 11):
        findings.append(Finding("ok", "python", python))
    else:
        findings.append(
            Finding("fail", "python", f"{python}; the project needs 3.11", "make setup with python3.11")
        )
    pins = _pins()
    for package in _PACKAGES:
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            findings.append(Finding("fail", package, "not installed", "make setup"))
            continue
        pinned = pins.get(package)
        if pinned is None or installed.split("+")[0] == pinned:  # a local label (+cpu) is the same release
            findings.append(Finding("ok", package, installed + (f" (pinned {pinned})" if pinned else "")))
        else:
            findings.append(
                Finding("warn", package, f"{installed} installed, the project pins {pinned}", "make setup")
            )
    return findings


@register_check("device")
def device_findings(context: DoctorContext) -> list[Finding]:
    """The device ``device=auto`` picks: cuda, then mps, then cpu."""
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        return [Finding("fail", "device", f"torch cannot be imported ({exc})", "make setup")]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return [Finding("ok", "device", f"cuda: {count} GPU(s), {name} (device=auto uses it)")]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [Finding("ok", "device", "mps (Apple GPU; device=auto uses it)")]
    return [Finding("ok", "device", "cpu (no GPU visible to torch; training runs on the CPU)")]


@register_check("disk")
def disk_findings(context: DoctorContext) -> list[Finding]:
    """Free space where data and checkpoints are written."""
    findings = []
    for folder in (context.data_dir, context.models_dir):
        _existing, free = paths.free_disk_gib(folder)
        label = f"free disk in {context.rel(folder)}/"
        if free < _FAIL_GIB:
            findings.append(
                Finding("fail", label, f"{free:.1f} GiB", "free space (the real archive needs about 6 GiB)")
            )
        elif free < _WARN_GIB:
            findings.append(
                Finding(
                    "warn", label, f"{free:.1f} GiB (the real archive and its preparation need about 6 GiB)"
                )
            )
        else:
            findings.append(Finding("ok", label, f"{free:.1f} GiB"))
    return findings


# -------------------------------------------------------------------------------------------- data
@register_check("data/raw")
def raw_data_findings(context: DoctorContext) -> list[Finding]:
    """The real archive in data/raw: every official file's header and row count against the official ones."""
    from sasrec.data import kuairec

    raw = context.data_dir / "raw"
    topic = context.rel(raw)
    present = {name: kuairec.find_file(raw, name) for name in kuairec.OFFICIAL_FILES} if raw.is_dir() else {}
    if not any(present.values()):
        return [
            Finding(
                "note",
                topic,
                "no real KuaiRec archive (the simulator's data are used); `make data` fetches it",
            )
        ]
    findings = []
    for name, path in present.items():
        schema = kuairec.OFFICIAL_FILES[name]
        if path is None:
            findings.append(
                Finding("fail", f"{topic}/{name}", "absent", "make data (or python -m sasrec download)")
            )
            continue
        try:
            kuairec.check_header(path, schema)
        except SasrecError as exc:
            findings.append(
                Finding("fail", f"{topic}/{name}", str(exc), "delete the unpacked files and run make data")
            )
            continue
        if context.quick:
            findings.append(Finding("ok", f"{topic}/{name}", "header valid (rows not counted: --quick)"))
            continue
        rows = kuairec.count_csv_rows(path, schema)
        if schema.expected_rows is None or rows == schema.expected_rows:
            findings.append(Finding("ok", f"{topic}/{name}", f"header valid, {rows:,} rows (official count)"))
        elif schema.rows_exact:
            findings.append(
                Finding(
                    "fail",
                    f"{topic}/{name}",
                    f"{rows:,} rows, the official file has {schema.expected_rows:,} (incomplete or altered)",
                    "delete the unpacked files and run make data",
                )
            )
        else:
            findings.append(
                Finding(
                    "ok",
                    f"{topic}/{name}",
                    f"header valid, {rows:,} rows (approximate official count {schema.expected_rows:,})",
                )
            )
    return findings


@register_check("data/simulated")
def simulated_data_findings(context: DoctorContext) -> list[Finding]:
    """Simulator outputs under data/ (``simulation.json`` beside both matrices)."""
    from sasrec.data import kuairec, simulator

    findings = []
    folders = sorted(p for p in context.data_dir.iterdir() if p.is_dir()) if context.data_dir.is_dir() else []
    simulated = [p for p in folders if simulator.is_simulated(p)]
    for folder in simulated:
        topic = context.rel(folder)
        try:
            info = json.loads((folder / simulator.METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            findings.append(
                Finding(
                    "fail",
                    topic,
                    f"{simulator.METADATA_FILE} unreadable ({exc})",
                    f"python -m sasrec simulate --out {topic}",
                )
            )
            continue
        missing = [name for name in kuairec.INTERACTION_FILES if kuairec.find_file(folder, name) is None]
        if missing:
            findings.append(
                Finding(
                    "fail",
                    topic,
                    f"lacks {', '.join(missing)}",
                    f"python -m sasrec simulate --out {topic} --scale {info.get('scale')} --seed {info.get('seed')}",
                )
            )
            continue
        findings.append(
            Finding("ok", topic, f"simulated data (scale {info.get('scale')}, seed {info.get('seed')})")
        )
    has_raw = (context.data_dir / "raw").is_dir() and kuairec.has_official_matrices(context.data_dir / "raw")
    if not simulated and not has_raw:
        findings.append(
            Finding(
                "fail",
                "data",
                "no interaction data: neither data/raw nor data/simulated",
                "make simulate (or make data)",
            )
        )
    elif not simulated:
        findings.append(Finding("note", "data/simulated", "absent (the real archive is used)"))
    return findings


def _prepare_command(meta: dict[str, Any], folder: str) -> str:
    from sasrec.data.preparation import DEFAULT_PARAMS

    source = str(meta.get("source_path", ""))
    if meta.get("data_source") == "text":
        command = f"python -m sasrec prepare {source} --out {folder}"
    else:
        command = (
            f"python -m sasrec prepare {meta.get('name')} --data-dir {Path(source).parent} --out {folder}"
        )
    params = meta.get("params") or {}
    for key, default in DEFAULT_PARAMS.items():
        if key in params and params[key] != default:
            command += f" --{key.replace('_', '-')} {params[key]}"
    return command


@register_check("prepared")
def prepared_findings(context: DoctorContext) -> list[Finding]:
    """Every prepared dataset under data/processed: meta.json sealed, every artifact's size and sha256."""
    from sasrec.data.kuairec import source_fingerprint
    from sasrec.data.preparation.artifacts import check_artifacts, read_meta

    processed = context.data_dir / "processed"
    if not processed.is_dir():
        return [
            Finding(
                "note", "prepared data", "none yet (prepared on first use, or by python -m sasrec prepare)"
            )
        ]
    findings = []
    folders = sorted(
        meta.parent
        for meta in processed.rglob("meta.json")
        if not any(part.startswith(".") for part in meta.relative_to(processed).parts)
    )
    for folder in folders:
        topic = context.rel(folder)
        try:
            meta = read_meta(folder)
        except (IntegrityError, MissingDataError) as exc:
            older = isinstance(exc, UnsealedError)
            if older:
                findings.append(
                    Finding(
                        "warn",
                        topic,
                        "prepared by an older version without checksums (prepared again on next use)",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "fail",
                        topic,
                        str(exc),
                        f"delete {topic} and prepare again (python -m sasrec prepare NAME --out {topic})",
                    )
                )
            continue
        problems = check_artifacts(folder, meta, hash_contents=not context.quick)
        command = _prepare_command(meta, topic)
        source = Path(str(meta.get("source_path")))
        if problems:
            findings.append(Finding("fail", topic, "; ".join(problems), command))
        elif not source.is_file():
            findings.append(
                Finding("warn", topic, f"intact, but its source {source} is gone (used as it is)")
            )
        elif meta.get("source_fingerprint") != source_fingerprint(source):
            findings.append(
                Finding(
                    "note", topic, f"intact, but {source.name} changed since (prepared again on next use)"
                )
            )
        else:
            counts = meta.get("counts", {})
            checked = "sizes checked (--quick)" if context.quick else "checksums verified"
            findings.append(
                Finding(
                    "ok",
                    topic,
                    f"{meta.get('name')}: {counts.get('events', 0):,} events, {len(meta['artifacts'])} files, {checked}",
                )
            )
    if not folders:
        findings.append(
            Finding(
                "note", "prepared data", "none yet (prepared on first use, or by python -m sasrec prepare)"
            )
        )
    return findings


@register_check("parquet cache")
def cache_findings(context: DoctorContext) -> list[Finding]:
    """Parquet cache entries: source gone, half-written, damaged or out of date."""
    from sasrec.data.kuairec.cache import cache_entries

    cache_dir = context.data_dir / "processed" / "cache"
    entries = cache_entries(cache_dir, verify=not context.quick)
    topic = context.rel(cache_dir)
    if not entries:
        return [Finding("ok", topic, "empty")]
    findings = []
    stale = [entry for entry in entries if entry.stale]
    if stale:
        names = ", ".join(f"{entry.parquet.name} ({entry.problem})" for entry in stale)
        findings.append(
            Finding(
                "warn",
                topic,
                f"{_count(len(stale), 'stale entry', 'stale entries')}: {names}",
                "pruned at the next read; or delete them",
            )
        )
    for entry in entries:
        if entry.problem and not entry.stale:
            findings.append(
                Finding(
                    "warn", f"{topic}/{entry.parquet.name}", f"{entry.problem} (rebuilt at the next read)"
                )
            )
    good = sum(1 for entry in entries if entry.problem is None)
    findings.append(Finding("ok", topic, _count(good, "valid entry", "valid entries")))
    return findings


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _partial_notebooks(reports: Path) -> list[Path]:
    return sorted(reports.rglob("*.partial.ipynb")) if reports.is_dir() else []


@register_check("temporary files")
def temporary_findings(context: DoctorContext) -> list[Finding]:
    """Temporaries left by killed runs (``.<name>.XXXXXXXX.tmp`` / ``.old``, ``*.partial.ipynb``)."""
    leftovers = []
    for folder in (context.data_dir, context.models_dir, context.reports_dir):
        for path in paths.find_temporaries(folder):
            target = paths.target_of_temporary(path)
            if target is not None and locks.is_locked(target):
                continue  # being written right now
            leftovers.append(path)
    leftovers += _partial_notebooks(context.reports_dir)
    if not leftovers:
        return [Finding("ok", "temporary files", "none left by interrupted runs")]
    shown = ", ".join(context.rel(path) for path in leftovers[:5])
    more = f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""
    return [
        Finding(
            "warn",
            "temporary files",
            f"{len(leftovers)} left by interrupted runs: {shown}{more}",
            "the next run writing the same target removes them; or delete them (unless a command is running now)",
        )
    ]


@register_check("locks")
def lock_findings(context: DoctorContext) -> list[Finding]:
    """Locks held now (a command is writing): who holds them and since when."""
    held = [
        lock
        for folder in (context.data_dir, context.models_dir, context.reports_dir)
        for lock in locks.held_locks(folder)
    ]
    if not held:
        return [Finding("ok", "locks", "none held (no command is writing)")]
    return [Finding("note", "locks", lock.describe().replace(str(context.root) + "/", "")) for lock in held]


@register_check("checkpoints")
def checkpoint_findings(context: DoctorContext) -> list[Finding]:
    """Every run folder under models/: its checkpoints load and match their recorded tensor digests; a run
    keeps a best and a last checkpoint per configuration (more files are leftovers of older versions)."""
    from sasrec.training.checkpoints import read_checkpoint

    folders = (
        sorted({p.parent for p in context.models_dir.rglob("*.pth")}) if context.models_dir.is_dir() else []
    )
    if not folders:
        return [
            Finding(
                "note",
                "checkpoints",
                f"none under {context.models_dir}",
                "train a model: python -m sasrec train ...",
            )
        ]
    findings = []
    for folder in folders:
        files = sorted(folder.glob("*.pth"))
        damaged = []
        for path in files if not context.quick else []:
            try:
                read_checkpoint(path)
            except SasrecError as exc:
                damaged.append(f"{path.name} ({str(exc).split(';')[0].split(': ', 1)[-1]})")
        configs = {
            re.sub(
                r"\.epoch=\d+",
                "",
                p.name.removesuffix(".last.pth").removesuffix(".train_valid.pth").removesuffix(".pth"),
            )
            for p in files
        }
        extra = len(files) - 3 * len(configs)
        relative = folder.relative_to(context.root) if folder.is_relative_to(context.root) else folder
        if damaged:
            findings.append(Finding("fail", "checkpoints", f"{relative}: {len(damaged)} damaged: {'; '.join(damaged)}",
                                    "delete them and retrain, or resume from the run's other checkpoint"))  # fmt: skip
        elif extra > 0:
            findings.append(Finding("note", "checkpoints", f"{relative}: {len(files)} checkpoint files for {len(configs)} configuration(s)",
                                    "files of every epoch are leftovers of an older version; keep the newest best and .last.pth"))  # fmt: skip
        else:
            checked = "present" if context.quick else "verified"
            findings.append(Finding("ok", "checkpoints", f"{relative}: {len(files)} {checked}"))
    return findings
