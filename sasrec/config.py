"""Reading parameter files: YAML mappings with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sasrec.errors import ConfigError


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
