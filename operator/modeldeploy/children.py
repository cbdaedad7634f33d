"""Child processes that die with the process that started them.

The local runner's stages, and the vendor tools a stage runs, are started in sessions of their
own (so Ctrl-C reaches only the runner, which stops them in order). Were the runner or the stage
killed outright, nothing would stop them, and a stage left running races the next run for the
same task. On Linux the kernel sends them SIGKILL when their parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: in the child, between fork and exec, ask for SIGKILL when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:  # the parent died before the request: nobody is left to stop this child
        os._exit(1)
