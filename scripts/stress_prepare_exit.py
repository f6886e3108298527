"""Does a process end cleanly right after a turn while Agent.prepare still encodes in the background?

Runs `bench-chat` on a two-conversation slice N times in fresh processes, with the prepare thread as
the agent makes it (not a daemon) and, for comparison, as a daemon thread (what it was when a
fresh-clone test run ended in a segmentation fault). The exit codes tell: a daemon thread still in
native code while the interpreter finalises crashes the process.

    python scripts/stress_prepare_exit.py --runs 8 --out runs/stress_prepare
Session 31, AMX Xeon, 2 cores: first with this code from a scratch file, daemon 2 of 6 runs rc 139
(SIGSEGV after the scores were written), non-daemon 0 of 8; then this script, `--runs 3`: daemon 2 of
3 (rc -11), non-daemon 0 of 3 (docs/results/stress_prepare_exit.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(out: str, daemon: bool, ids: list[str]) -> int:
    import gpt4tools.agent as A
    from gpt4tools.cli import main

    init = A.Agent.__init__

    def agent_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.config.prepare_next = True

    A.Agent.__init__ = agent_init
    if daemon:
        class Daemon(threading.Thread):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "daemon": True})

        A.threading = type(threading)("threading_with_daemons")
        A.threading.Thread = Daemon
    return main(["bench-chat", "--ids", *ids, "--out", out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--ids", nargs="+", default=["c016", "c083"])
    ap.add_argument("--out", default="runs/stress_prepare")
    ap.add_argument("--child", nargs=2, metavar=("OUT", "DAEMON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.exit(child(args.child[0], args.child[1] == "1", args.ids))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    codes: dict[str, list[int]] = {"thread": [], "daemon thread": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in range(args.runs):
        for kind, flag in (("thread", "0"), ("daemon thread", "1")):
            run_dir = out / f"{kind.replace(' ', '_')}_{i}"
            cmd = [sys.executable, __file__, "--ids", *args.ids, "--child", str(run_dir), flag]
            with open(run_dir.with_suffix(".log"), "w") as log:
                rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            codes[kind].append(rc)
            print(f"run {i} {kind}: rc {rc}", flush=True)
    summary = {k: {"runs": len(v), "crashed": sum(rc != 0 for rc in v), "codes": v} for k, v in codes.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
