"""The one exception a user can cause: the CLIs print its message on one line and exit with code 2."""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says how."""
