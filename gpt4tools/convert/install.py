"""The cache -> checkpoints path: build outputs once, check them, link them into place.

Layout (cache = `paths.cache_dir()`, shared by every clone on the machine):
    <cache>/downloads/<kind>/<package>-<version>/<file>   what pip/npm fetched (sources.py)
    <cache>/built/<name>/...  + .built.json               an entry's finished files and their sha256
    <cache>/buildenv/<env>/                               converter venvs (buildenv.py)
    <checkpoints>/<name>/...  + .verified                 hard links to (or copies of) the built files

`.verified` is written last, after every file matched its sha256; it records the sha256
and size of each file, so `status` needs only stat() and `verify` can re-hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gpt4tools.convert.files import (
    FetchError,
    FileSpec,
    disk_errors,
    place,
    read_json,
    remove,
    remove_stale,
    sha256_file,
    write_json,
)
from gpt4tools.convert.recipes import BuildContext
from gpt4tools.convert.sources import download

Say = Callable[[str], None]
MARKER = ".verified"
BUILT = ".built.json"
SKIP_DIRS = {".cache", ".git"}  # hub download bookkeeping, not weights


def hash_tree(root: Path) -> dict[str, dict]:
    """sha256 and size of every file below `root` (hub snapshots, local folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not SKIP_DIRS & set(rel.parts) and p.name != MARKER and ".partial-" not in p.name:
            out[rel.as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def marker_problem(dest: Path, fingerprint: str, full: bool) -> str | None:
    """Why `dest` is not a complete install (None if it is). full=False: sizes only (cheap)."""
    marker = read_json(dest / MARKER)
    if marker is None:
        return "not fetched"
    if marker.get("fingerprint") != fingerprint:
        return "fetched from an older manifest entry; fetch it again"
    for rel, rec in marker.get("files", {}).items():
        p = dest / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != rec["size"]:
            return f"{rel} has {p.stat().st_size} bytes, expected {rec['size']} (truncated or replaced)"
        if full and sha256_file(p) != rec["sha256"]:
            return f"{rel} is corrupt (sha256 differs from the one recorded at fetch time)"
    return None


def write_marker(dest: Path, name: str, source: str, fingerprint: str, files: dict[str, dict]) -> None:
    write_json(dest / MARKER, {
        "name": name, "source": source, "fingerprint": fingerprint, "files": files,
        "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def ensure_built(name: str, files: dict[str, FileSpec], fingerprint: str, sources: list[tuple[str, str]],
                 recipe: Callable[[BuildContext], None], cache: Path, say: Say, force: bool = False) -> dict[str, str]:
    """Make sure <cache>/built/<name>/ holds every file, whole; returns {rel: sha256}."""
    bdir = cache / "built" / name
    record = read_json(bdir / BUILT) or {}
    hashes: dict[str, str] = record.get("files", {}) if record.get("fingerprint") == fingerprint else {}
    if hashes and not force:
        for rel in files:
            p = bdir / rel
            if rel not in hashes or not p.is_file():
                break
            if sha256_file(p) != hashes[rel]:
                say(f"cached {rel} is corrupt (sha256 differs); deleting it and rebuilding")
                p.unlink()
                break
        else:
            return {rel: hashes[rel] for rel in files}

    downloads = [download(spec, sha, cache, say) for spec, sha in sources]
    for leftover in (f".{name}.partial-*", f".{name}.old-*"):  # from runs that were killed
        remove_stale(cache / "built", leftover)
    tmp = cache / "built" / f".{name}.partial-{os.getpid()}"
    remove(tmp)
    out, work = tmp / "out", tmp / "work"
    out.mkdir(parents=True)
    work.mkdir()
    old = bdir.with_name(f".{name}.old-{os.getpid()}")
    try:
        with disk_errors(tmp):
            _build(name, files, fingerprint, recipe, BuildContext(name, downloads, out, work, cache, say), bdir, old)
    finally:
        remove(old)
        remove(tmp)  # an interrupted or failed build leaves nothing that looks finished
    return read_json(bdir / BUILT)["files"]


def _build(name: str, files: dict[str, FileSpec], fingerprint: str, recipe: Callable[[BuildContext], None],
           ctx: BuildContext, bdir: Path, old: Path) -> None:
    """Run the recipe, check each output against the manifest, then swap the folder into the cache."""
    recipe(ctx)
    hashes = {}
    for rel, spec in files.items():
        p = ctx.out / rel
        if not p.is_file():
            raise FetchError(f"building {name} did not produce {rel} (recipe and manifest disagree)")
        got = sha256_file(p)
        if got != spec.sha256:
            if not spec.built:
                raise FetchError(f"{name}/{rel} has sha256 {got}, but the manifest expects {spec.sha256}: "
                                 "the download or its extraction is corrupt")
            # Expected for tf2onnx (it does not write the same bytes twice) and for other library versions.
            ctx.say(f"note: converted {rel} is not byte-identical to the manifest's reference build "
                    f"(sha256 {got[:12]}...); recording this build's sha256 for later checks")
        hashes[rel] = got
        os.chmod(p, 0o444)  # shared with checkpoints/ through hard links: keep it read-only
    write_json(ctx.out / BUILT, {"fingerprint": fingerprint, "files": hashes})
    # Swap the finished folder in; the old one (if any) goes only after the new one is there.
    if bdir.exists():
        os.replace(bdir, old)
    os.replace(ctx.out, bdir)


def install_built(name: str, source: str, fingerprint: str, hashes: dict[str, str], cache: Path, dest: Path,
                  say: Say) -> None:
    """Link (or copy) the built files into `dest`, then write the marker."""
    bdir = cache / "built" / name
    (dest / MARKER).unlink(missing_ok=True)  # from here on, dest is not trusted until the marker is back
    for sub in {(dest / rel).parent for rel in hashes}:
        remove_stale(sub, ".*.partial-*")
    recorded = {}
    with disk_errors(dest):
        for rel, sha in hashes.items():
            src, dst = bdir / rel, dest / rel
            if dst.is_file() and os.path.samefile(src, dst):
                pass  # a hard link to the cache file just checked
            elif dst.is_file() and dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha:
                pass  # an intact copy (checkpoints on another filesystem)
            elif place(src, dst) and sha256_file(dst) != sha:  # copies are re-read; links are the checked file
                dst.unlink()
                raise FetchError(f"copying {rel} into {dest} gave a corrupt file; check that disk")
            recorded[rel] = {"sha256": sha, "size": src.stat().st_size}
        write_marker(dest, name, source, fingerprint, recorded)


def install_tree(name: str, source: str, fingerprint: str, dest: Path, fill: Callable[[Path], None], say: Say) -> None:
    """Hub entries: `fill(tmp_dir)` puts the files there; then hash, mark and swap into `dest`."""
    for leftover in (f".{dest.name}.partial-*", f".{dest.name}.old-*"):
        remove_stale(dest.parent, leftover)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    remove(tmp)
    tmp.mkdir(parents=True)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        with disk_errors(tmp):
            _fill_and_swap(name, source, fingerprint, dest, tmp, old, fill, say)
    finally:
        remove(old)
        remove(tmp)


def _fill_and_swap(name: str, source: str, fingerprint: str, dest: Path, tmp: Path, old: Path,
                   fill: Callable[[Path], None], say: Say) -> None:
    fill(tmp)
    say("hashing the files (recorded so that `verify` can detect later corruption) ...")
    files = hash_tree(tmp)
    if not files:
        raise FetchError(f"{name}: nothing was downloaded or copied")
    write_marker(tmp, name, source, fingerprint, files)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)


@contextlib.contextmanager
def entry_lock(cache: Path, name: str, say: Say) -> Iterator[None]:
    """One fetch of an entry at a time per machine (two clones may share the cache)."""
    path = cache / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another fetch of this entry is running; waiting for it ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def copy_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy) every file of a user's local model folder into `dst`."""
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if p.is_file() and not SKIP_DIRS & set(rel.parts):
            place(p, dst / rel)
