"""User-facing errors: the command line prints their message on one line and exits non-zero."""


class SasrecError(Exception):
    """Base class of every error caused by input, configuration or missing files."""


class DataValidationError(SasrecError, ValueError):
    """A KuaiRec or SASRec-format file does not match its schema (file, column, rows and an example)."""


class ConfigError(SasrecError, ValueError):
    """A parameter or command-line flag has an invalid value."""


class MissingDataError(SasrecError, FileNotFoundError):
    """An input file or prepared artifact is missing."""


class CheckpointMismatchError(SasrecError, ValueError):
    """A checkpoint was trained on a different dataset (fingerprint or id maps differ)."""


class IntegrityError(SasrecError, ValueError):
    """A file does not match the checksum recorded when it was written (truncated or damaged)."""


class UnsealedError(IntegrityError):
    """A file carries no checksum at all: written by an older version of the package, or by hand."""


class LockBusyError(SasrecError):
    """Another process holds the lock of a file or folder being written (the message names the holder)."""


class StorageError(SasrecError, OSError):
    """Writing failed because of the storage: disk full, read-only folder or missing permission."""
