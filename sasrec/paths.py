"""Project-root-relative paths and atomic file writes.

Every path is resolved from the project root, because JupyterLab, papermill and nbval start kernels in
different working directories. ``SASREC_ROOT`` overrides the root (used by tests).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def project_root() -> Path:
    """Return the project root: ``$SASREC_ROOT`` or the folder holding pyproject.toml above this package."""
    env = os.environ.get("SASREC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "sasrec").is_dir():
            return candidate
    return Path.cwd().resolve()


def data_dir() -> Path:
    """Ignored folder holding raw, simulated and processed data."""
    return project_root() / "data"


def raw_dir() -> Path:
    """Where ``make data`` puts the official KuaiRec archive's files."""
    return data_dir() / "raw"


def simulated_dir() -> Path:
    """Where ``make simulate`` writes the KuaiRec-shaped simulated files (the embedded default)."""
    return data_dir() / "simulated"


def processed_dir() -> Path:
    """Parsed-table cache and prepared datasets."""
    return data_dir() / "processed"


def models_dir() -> Path:
    """Checkpoints and training logs (ignored)."""
    return project_root() / "models"


def reports_dir() -> Path:
    """Regenerated report: figures, metrics, executed notebooks, HTML and README."""
    return project_root() / "reports"


def shared_sample_dir() -> Path:
    """The real KuaiRec sample files shipped beside the checkout (``../shared``), possibly absent."""
    return project_root().parent / "shared" / "data" / "kuairec_sample"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a relative path against the project root (absolute paths are returned unchanged)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Nothing half-written is ever left under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the mode a plain open() would
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
