"""The one exception type users see.

`PtgError` carries a message meant for a person: it names the bad value and says how to fix it.
The CLI prints it as one line and exits 1; anything else is a bug and keeps its traceback.
"""


class PtgError(Exception):
    """A user-facing error: bad input, missing file, mismatched store, ..."""
