"""Small helpers shared by the command-line sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from sasrec.errors import ConfigError

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


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


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of parameter: value, got {type(loaded).__name__}"
        )
    return loaded


def progress_enabled(flag: bool | None = None) -> bool:
    """Whether to show tqdm bars: off when ``flag`` is False or ``SASREC_PROGRESS=0`` (papermill, nbval)."""
    import os

    if flag is not None:
        return flag
    return os.environ.get("SASREC_PROGRESS", "1") not in {"0", "false", "False"}
