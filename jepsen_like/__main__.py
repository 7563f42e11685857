"""``python -m jepsen_like``: see :mod:`jepsen_like.cli`."""

import sys

from jepsen_like.cli import main

if __name__ == "__main__":
    sys.exit(main())
