"""Throw-away virtual environments for one-off conversions, kept under the cache dir.

The app's venv pins numpy<2 and protobuf<5 (mediapipe 0.10.21), while `onnx` and
TensorFlow want newer ones, so converters run in their own venvs with pinned versions
and the app never imports them. A venv is reused while its pin list is unchanged; one
left half-built by an interrupted run (no `.complete` stamp) is deleted and rebuilt.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

from gpt4tools.convert.files import FetchError, disk_errors, remove

Say = Callable[[str], None]

# Exact pins (the set pip resolved on Python 3.11, 2026-11), so converted files are the
# ones the manifest hashes. `onnx` builds HED; `tf2onnx` converts the TF.js graph models.
ENVS: dict[str, tuple[str, ...]] = {
    "onnx": ("numpy==2.4.6", "h5py==3.14.0", "onnx==1.23.2", "protobuf==7.36.2",
             "ml_dtypes==0.6.0", "typing_extensions==4.16.0"),
    "tf2onnx": ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "numpy==2.4.6", "onnx==1.23.2",
                "protobuf==7.36.2", "h5py==3.14.0", "keras==3.15.1", "ml_dtypes==0.6.0"),
}
SCRIPTS = Path(__file__).resolve().parent  # the converter scripts live beside this module


def env_python(name: str, cache: Path, say: Say) -> Path:
    """The python of build venv `name`, creating it first if needed (pip, from PyPI)."""
    pins = ENVS[name]
    root = cache / "buildenv" / name
    stamp = root / ".complete"
    python = root / "bin" / "python"
    if stamp.is_file() and stamp.read_text() == "\n".join(pins) and python.exists():
        return python
    remove(root)
    say(f"creating build venv {root} ({', '.join(p.split('==')[0] for p in pins)}); one-off, ~1 min ...")
    with disk_errors(root):
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stdout.splitlines() if "is ignored" not in line)[-1500:]
        remove(root)
        raise FetchError(f"creating the '{name}' build venv failed: `{' '.join(cmd)}`\n{tail}\n"
                         "Check that PyPI can be reached (pip config list), then run the fetch again.")
    stamp.write_text("\n".join(pins))
    return python


def run_script(env: str, script: str, args: list[str], cache: Path, log: Path, say: Say) -> None:
    """Run converter `script` (a file beside this module) in build venv `env`; output goes to `log`."""
    python = env_python(env, cache, say) if env != "app" else Path(sys.executable)
    cmd = [str(python), str(SCRIPTS / script), *args]
    # PYTHONHASHSEED fixed: converters that iterate over sets then write the same bytes each run.
    extra = {"PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(log.parent), open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **extra})
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        if "No space left on device" in tail:
            with disk_errors(log.parent):
                raise OSError(28, "No space left on device")
        raise FetchError(f"conversion failed (exit {proc.returncode}): `{' '.join(cmd)}`\n{tail}\nFull log: {log}")
