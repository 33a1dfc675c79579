"""Long catalog commands stopped by SIGTERM (docker stop, systemd, a CI timeout) clean up as after Ctrl-C."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def terminated_like_interrupted():
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does: the write under way rolls back and deletes
    the photo files it had stored, where SIGTERM's default ended the process on the spot and left them on disk with
    no row. Outside the main thread (where no handler can be set) nothing changes."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
