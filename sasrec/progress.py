"""Progress bars: shown on a terminal, switched off for papermill and nbval (``SASREC_PROGRESS=0``)."""

from __future__ import annotations

import os


def progress_enabled(flag: bool | None = None) -> bool:
    """Whether to show tqdm bars: off when ``flag`` is False or ``SASREC_PROGRESS=0`` (papermill, nbval)."""
    if flag is not None:
        return flag
    return os.environ.get("SASREC_PROGRESS", "1") not in {"0", "false", "False"}
