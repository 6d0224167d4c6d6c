"""Named points where a test child process can SIGKILL itself.

Crash tests need to kill the sync process at an exact step of a send (before the
request, after the collector committed but before the local delete, inside the delete
transaction). Timing a kill from outside cannot hit those windows reliably, so the code
calls ``reach(name)`` at each step and a child started with ``EDGEPACK_CRASH_AT=name``
kills itself there. Unset, it is one dict lookup per batch.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "EDGEPACK_CRASH_AT"
POINTS = ("before_request", "after_response", "during_delete")


def reach(name: str) -> None:
    """SIGKILL this process if ``EDGEPACK_CRASH_AT`` names ``name``."""
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
