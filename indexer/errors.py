"""The one error hierarchy of the indexer.

Every exception the indexer raises on purpose derives from `IndexerError`. An error is either
`Retryable` (the operation may succeed if tried again: a dead endpoint, a database outage, a lost race) or
`Fatal` (retrying cannot help; the process stops). Each error carries the exit code the command line uses,
so exit codes are decided here and nowhere else.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `rbtc-indexer` (the systemd unit restarts on none of USAGE, REORG, LOCKED)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    REORG_BELOW_FINALITY = 3
    ALREADY_RUNNING = 4
    DIFFERENCES = 5

    @classmethod
    def describe(cls, code: int) -> str:
        """A short human name for an exit code ('error' for codes this project does not define)."""
        names = {cls.OK: "clean", cls.ALREADY_RUNNING: "already running"}
        try:
            member = cls(code)
        except ValueError:
            return "error"
        return names.get(member, member.name.lower().replace("_", " "))


class IndexerError(Exception):
    """Base of every error the indexer raises on purpose."""

    exit_code: ExitCode = ExitCode.ERROR


class Retryable(IndexerError):
    """The operation may succeed when tried again (with backoff)."""


class Fatal(IndexerError):
    """Retrying cannot help: the process reports the error and exits with `exit_code`."""


class ConfigError(Fatal):
    """A bad configuration value, file or command-line usage; the message names the field."""

    exit_code = ExitCode.USAGE


class ReorgBelowFinality(Fatal):
    """The chain changed at or below a block the indexer treated as final."""

    exit_code = ExitCode.REORG_BELOW_FINALITY


class AlreadyRunning(Fatal):
    """Another process holds the lock this one needs."""

    exit_code = ExitCode.ALREADY_RUNNING


def exit_code_of(failure: BaseException | None) -> ExitCode:
    """The exit code for a run that ended with `failure` (None: success)."""
    if failure is None:
        return ExitCode.OK
    if isinstance(failure, IndexerError):
        return failure.exit_code
    return ExitCode.ERROR
