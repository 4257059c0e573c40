"""Generate tunes from the best model and measure how many are playable (issue 4)."""

import sys

if __name__ == "__main__":
    print("generate.py: error: not implemented yet; prepare.py is the part that works today", file=sys.stderr)
    sys.exit(2)
