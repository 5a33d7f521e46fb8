"""The exceptions users see.

`PtgError` carries a message meant for a person: it names the bad value and says how to fix it.
The CLI prints it as one line and exits with its ``exit_code`` (1); anything else is a bug and
keeps its traceback.
"""


class PtgError(Exception):
    """A user-facing error: bad input, missing file, mismatched store, ..."""

    exit_code = 1


class Interrupted(PtgError):
    """Work stopped by SIGINT (exit 130) or SIGTERM (exit 143) after saving what it had.

    The message says what was saved and how to continue.
    """

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
