"""The one exception type for mistakes a user can make (bad file, bad config, missing extra).

The CLI turns a `UserError` into a single line on stderr and exit code 2, with no traceback;
anything else is a bug in cotdistill and keeps its traceback.
"""


class UserError(Exception):
    """An error the user can fix: the message names the input and what was expected."""


def missing_extra(package: str, extra: str) -> UserError:
    """The error raised when an optional dependency is not installed."""
    return UserError(
        f"the Python package '{package}' is not installed; install it with: "
        f"pip install 'cotdistill[{extra}]'"
    )


class StorageError(UserError):
    """A write that failed for lack of space or rights (paths.storage_error): its own type, so that
    a writer can say what it was writing (e.g. a model into the model cache) before the message."""


class StageStopped(UserError):
    """A stage that stopped cleanly before its end (e.g. a spent teacher budget): what it did so far
    is kept, `info` goes into the manifest with status "stopped", and rerunning continues it."""

    def __init__(self, message: str, info: dict | None = None):
        super().__init__(message)
        self.info = info or {}


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP stopped the command (the CLI raises it from its signal handler).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it; not a
    KeyboardInterrupt, because typer turns those into a silent exit before the CLI can say what to
    do. The run directory's manifest records the stage as "interrupted"; rerunning resumes."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
