"""Small helpers shared by the command-line sub-commands."""

from __future__ import annotations

import argparse

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
