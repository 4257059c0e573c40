"""What every command-line entry point shares: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable

from abcmusic.errors import UserError

USER_ERROR_EXIT = 2


def run_cli(program: str, main: Callable[[list[str]], int], argv: list[str]) -> int:
    try:
        return main(argv)
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"{program}: interrupted; nothing incomplete was left behind", file=sys.stderr)
        return 130
