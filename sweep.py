"""Train every GPT and LSTM size at a fixed token budget and fit the scaling law (issue 3)."""

import sys

if __name__ == "__main__":
    print("sweep.py: error: not implemented yet; prepare.py is the part that works today", file=sys.stderr)
    sys.exit(2)
