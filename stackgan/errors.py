"""The one error type the CLI turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input the user can fix: the message says what is wrong and what to do."""
