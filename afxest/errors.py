"""Errors that reach the user as one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad usage or bad input: the message is the single line the user sees."""
