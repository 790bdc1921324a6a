"""``python -m lineguard.cli ...``: the ``lineguard`` command (tests and the soak tooling start it this way)."""

import sys

from lineguard.cli import main

if __name__ == "__main__":
    sys.exit(main())
