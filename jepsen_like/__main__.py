"""``python -m jepsen_like``: see :mod:`jepsen_like.cli`."""

import faulthandler
import signal
import sys

from jepsen_like.cli import main

if __name__ == "__main__":
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a stuck run shows where.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(main())
