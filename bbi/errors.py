"""The one error type users can cause.

The CLI prints a ``BbiError`` as a single line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class BbiError(Exception):
    """A user-caused error (bad file, unknown model, impossible budget...)."""
