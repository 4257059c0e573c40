"""The one exception a user can cause: the CLIs print its message on one line and exit with code 2."""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says how."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (many span several), or its type when it has none."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__
