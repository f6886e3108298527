"""`python -m gpt4tools.ui.jobguard FD COMMAND...`: run COMMAND and stop it when the app that started it dies.

The app (gpt4tools.ui.jobs) holds the write end of a pipe whose read end is FD here. However the
app ends (exit, SIGTERM, SIGKILL, a crash), the kernel closes that write end, this guard reads
end-of-file and stops the job's whole process group: SIGTERM first (a resumable job saves), then
SIGKILL after a grace period. So no job outlives the app, where the one-job limit could no longer
see it. Why not prctl(PR_SET_PDEATHSIG): it fires when the *thread* that started the child ends,
and the app starts jobs from gradio's pooled worker threads, which come and go.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

GRACE_S = 10.0  # as Job.stop: time for a job to save on SIGTERM
POLL_S = 0.2


def _exit_code(returncode: int) -> int:
    """A child killed by signal N exits the guard with 128+N, as a shell reports it."""
    return returncode if returncode >= 0 else 128 - returncode


def _app_is_gone(lifeline: int) -> bool:
    readable, _, _ = select.select([lifeline], [], [], POLL_S)
    return bool(readable) and not os.read(lifeline, 1)  # end of file: no write end is open any more


def _stop_group(child: subprocess.Popen) -> None:
    os.killpg(os.getpgrp(), signal.SIGTERM)  # the guard itself ignores it (see main)
    try:
        child.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the job's workers too, and this guard last


def main(argv: list[str]) -> int:
    lifeline, command = int(argv[0]), argv[1:]
    # Job.stop sends SIGTERM to the whole group: the job saves and exits, the guard outlives it to
    # report its exit code. A Python handler, not SIG_IGN: handlers do not survive exec, SIG_IGN would.
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(command)  # same process group; stdin/stdout/stderr inherited; FD not passed on
    while True:
        if child.poll() is not None:
            return _exit_code(child.returncode)
        if _app_is_gone(lifeline):
            _stop_group(child)
            return _exit_code(child.wait())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
