"""The one entry point: every command answers --help, unknown commands fail clearly."""

import subprocess
import sys
from pathlib import Path

import pytest

from gpt4tools.cli import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"serve"}))
def test_each_command_has_help(command):
    res = subprocess.run([sys.executable, "-m", "gpt4tools", command, "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    assert "usage:" in res.stdout.lower() and len(res.stdout) > 100


def test_tools_command_lists_all_31(capsys):
    assert main(["tools"]) == 0
    assert "of 31 tools available" in capsys.readouterr().out
