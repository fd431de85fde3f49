"""The errors ``xray_tasks`` raises on purpose: one base class, one subclass per kind of failure.

A stage that fails for one of these reasons says so in one line (the message names the file, the field or the
object and what is wrong) and the CLI exits with status 1.  Anything else is a bug: the CLI prints its traceback
and exits with status 2.  Each kind also derives from the built-in exception callers caught before this module
existed (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class XrayError(Exception):
    """Base of every error raised on purpose by ``xray_tasks``."""


class BadInput(XrayError, ValueError):
    """Input data, an argument or a setting that cannot be used; the message says which and why."""


class MissingInput(XrayError, FileNotFoundError):
    """Something a stage needs does not exist (yet): usually an earlier stage has not run."""


class IntegrityError(XrayError):
    """A stored artifact disagrees with what was recorded about it (checksums, markers, contracts)."""


class Conflict(XrayError):
    """Another writer changed the state this operation relied on; nothing of this operation was applied."""


class StorageError(XrayError, RuntimeError):
    """An object store or file system refused an operation; the message names the URI and the cause."""


class StageError(XrayError, RuntimeError):
    """A stage cannot go on for a reason stated in the message (no GPU where one was required, ...)."""
