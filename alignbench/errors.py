"""The one exception type a user sees as a message (never as a traceback)."""


class AlignBenchError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and what to do."""
