"""What a job form may ask a job to do: the options of each job command that the web tabs accept,
with typed and bounded values, and the folders a job may read or write.

The job tabs turn form fields (and a free "More options" field) into the command line of
`python -m gpt4tools <command>`. A browser is not the operator: without these checks any
option reaches the CLI, so a form could read any file (`--alpaca /etc/passwd`), write anywhere
(`--work /some/dir`), load any local model or hub id, or start thousands of workers. Here every
option is looked up in a per-command allow-list; values are parsed (integers and floats within
bounds, choices, flags without values); paths must resolve (symlinks and `..` included) inside
the project's data/, runs/ or assets/ (runs/ only for a folder the job writes); models are the
known names or a path inside those folders, unless the operator sets GPT4TOOLS_JOBS_ANY_MODEL=1.
Anything else is `Refused`, with a message that names the option.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gpt4tools import paths

ANY_MODEL_ENV = "GPT4TOOLS_JOBS_ANY_MODEL"  # "1": the operator lets forms name any local model or hub id


class Refused(ValueError):
    """A form value that no job may run with; the message names the option and why."""


# -- where a job may read and write ------------------------------------------------------------
def job_roots() -> tuple[Path, ...]:
    """data/, runs/ (GPT4TOOLS_RUNS moves it) and assets/, symlinks resolved."""
    return tuple(p.resolve() for p in (paths.REPO / "data", paths.runs_dir(), paths.assets_dir()))


def writable_roots() -> tuple[Path, ...]:
    """Where a job may write besides its run folder: runs/ only (data/ and assets/ are the project's)."""
    return (paths.runs_dir().resolve(),)


def adapter_roots() -> tuple[Path, ...]:
    """Adapters may also be the committed ones under adapters/."""
    return (*job_roots(), (paths.REPO / "adapters").resolve())


def _roots_text(roots: Iterable[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def path_inside(option: str, value: str, roots: Iterable[Path] | None = None) -> str:
    """`value` as an absolute path with symlinks and `..` resolved, if that lies inside `roots`
    (relative paths are relative to the repo, the job's working directory)."""
    roots = tuple(roots or job_roots())
    if not value or "\0" in value:
        raise Refused(f"{option}: an empty path or one with a NUL character is not a path")
    path = Path(value)
    try:
        real = (path if path.is_absolute() else paths.REPO / path).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        raise Refused(f"{option}: {value!r} cannot be resolved ({e})") from None
    if not any(real.is_relative_to(root) for root in roots):
        raise Refused(f"{option}: {value!r} is outside the folders jobs may use ({_roots_text(roots)})")
    return str(real)


# -- value kinds -------------------------------------------------------------------------------
def cpu_count() -> int:
    return os.cpu_count() or 1


def _whole(option: str, value: str) -> int:
    """An integer, also from a form's number field ("5.0")."""
    try:
        return int(str(value).strip())
    except ValueError:
        pass
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not number.is_integer():  # nan and inf are not either
        raise Refused(f"{option}: {value!r} is not a whole number")
    return int(number)


@dataclass(frozen=True)
class Flag:
    """An option without a value (`--no-photos`)."""

    takes_value = False

    def check(self, option: str, value: str) -> str:
        raise Refused(f"{option} takes no value (got {value!r})")


@dataclass(frozen=True)
class Int:
    low: int
    high: int | Callable[[], int]
    takes_value = True

    def check(self, option: str, value: str) -> str:
        number = _whole(option, value)
        high = self.high() if callable(self.high) else self.high
        if not self.low <= number <= high:
            raise Refused(f"{option}: {number} is outside {self.low}..{high}")
        return str(number)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    takes_value = True

    def check(self, option: str, value: str) -> str:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise Refused(f"{option}: {value!r} is not a number") from None
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise Refused(f"{option}: {value} is outside {self.low:g}..{self.high:g}")
        return repr(number)


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]
    takes_value = True

    def check(self, option: str, value: str) -> str:
        if value not in self.values:
            raise Refused(f"{option}: {value!r} is not one of {', '.join(self.values)}")
        return value


@dataclass(frozen=True)
class Pattern:
    """A short word-like value (a device, module names), by regular expression."""

    regex: str
    meaning: str
    takes_value = True

    def check(self, option: str, value: str) -> str:
        if not re.fullmatch(self.regex, value):
            raise Refused(f"{option}: {value!r} is not {self.meaning}")
        return value


@dataclass(frozen=True)
class InRoots:
    """A file or folder inside data/, runs/ or assets/ (see `path_inside`)."""

    roots: Callable[[], tuple[Path, ...]] = job_roots
    takes_value = True

    def check(self, option: str, value: str) -> str:
        return path_inside(option, value, self.roots())


@dataclass(frozen=True)
class NameOrPath:
    """One of the known names, or a path inside the job folders (`extra_roots` too)."""

    names: Callable[[], Iterable[str]]
    what: str
    roots: Callable[[], tuple[Path, ...]] = job_roots
    takes_value = True

    def check(self, option: str, value: str) -> str:
        value = value.strip()
        if value in set(self.names()):
            return value
        try:
            return path_inside(option, value, self.roots())
        except Refused:
            known = ", ".join(sorted(self.names()))
            raise Refused(f"{option}: {value!r} is neither a known {self.what} ({known}) nor a path inside "
                          f"{_roots_text(self.roots())}") from None


def known_models() -> set[str]:
    from gpt4tools import weights

    return {"default", *weights.load_manifest()}


@dataclass(frozen=True)
class Model(NameOrPath):
    """A model to load: a known name or a path inside the job folders, or anything where the
    operator allows it (ANY_MODEL_ENV), since a path or hub id makes the job read or download it."""

    names: Callable[[], Iterable[str]] = known_models
    what: str = "model"

    def check(self, option: str, value: str) -> str:
        if os.environ.get(ANY_MODEL_ENV) == "1":
            return SERVED_NAME.check(option, value.strip())
        return super().check(option, value)


# A served model's name (openai backend) goes to the server as a string: it is never opened.
SERVED_NAME = Pattern(r"[\w][\w.:/@+-]{0,199}", "a model name (letters, digits and ._:/@+-)")
DEVICE = Pattern(r"auto|cpu|mps|cuda(:\d{1,2})?", "a device (auto, cpu, mps, cuda, cuda:N)")
SEED = Int(0, 2**31 - 1)
SHARE = Float(0.0, 1.0)


def _template_names() -> list[str]:
    from gpt4tools.prompt import builtin_names

    return list(builtin_names())


# -- the allow-lists ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Allowed:
    """One command's accepted options; `repeatable` may be given more than once, `many` take
    several values (argparse nargs="+")."""

    options: dict[str, object]
    repeatable: frozenset[str] = field(default_factory=frozenset)
    many: frozenset[str] = field(default_factory=frozenset)


def _data_build() -> Allowed:
    from gpt4tools.data.build import SPLITS, TEACHERS
    from gpt4tools.llm import NAMED_BACKENDS

    sizes = {name: Int(0, 100_000) for name in (
        "--train-records", "--val-per-tool", "--val-finals", "--test-per-tool", "--val-negatives",
        "--test-negatives", "--chat-per-tool", "--chat-negatives", "--max-contents", "--patience")}
    shares = {name: SHARE for name in ("--negative-share", "--merge-share", "--many-tools-share", "--retrieved-share",
                                       "--dedupe-threshold")}
    flags = {name: Flag() for name in ("--no-photos", "--no-synthetic", "--chat", "--no-sharegpt", "--include-unseen",
                                       "--embeddings", "--json", "--gzip", "--quiet")}
    # Not here: --out (the run folder) and --base-url (the form's URL field, which decides who gets the API key).
    return Allowed({
        **sizes, **shares, **flags,
        "--split": Choice(tuple(SPLITS)), "--teacher": Choice(tuple(TEACHERS)), "--backend": Choice(NAMED_BACKENDS),
        "--model": Model(), "--seed": SEED, "--chat-offer": Int(0, 100),
        "--photos": InRoots(), "--coco-captions": InRoots(), "--coco-instances": InRoots(), "--alpaca": InRoots(),
        "--work": InRoots(writable_roots), "--tokenizer": InRoots(),
        "--load": Pattern(r"\w[\w .:,-]{0,499}", "a tool list (registry --load syntax)"),
        "--device": DEVICE, "--workers": Int(1, cpu_count), "--retries": Int(0, 10), "--timeout": Float(1, 3600),
        "--max-reply-chars": Int(1, 100_000), "--max-prompt-chars": Int(1, 100_000),
        "--near-dup-keep": Int(1, 1000), "--dedupe-scope": Choice(("all", "image")), "--cutoff": Int(64, 32_768),
    }, repeatable=frozenset({"--photos", "--alpaca"}))


def _train() -> Allowed:
    from gpt4tools.hardware import DTYPES
    from gpt4tools.models import ADAPTER_DTYPES

    flags = {f"--{neg}{name}": Flag() for name in ("mask-prompt", "merge-turns", "gradient-checkpointing", "resume")
             for neg in ("", "no-")}
    # Not here: --out-dir (the run folder).
    return Allowed({
        **flags,
        "--base-model": Model(), "--data": InRoots(),
        "--template": NameOrPath(_template_names, "prompt template"),
        "--lora-r": Int(1, 512), "--lora-alpha": Int(1, 2048), "--lora-dropout": Float(0.0, 0.9),
        "--target-modules": Pattern(r"[A-Za-z_][\w.]{0,63}", "a module name"),
        "--lora-layers": Pattern(r"(top:\d{1,3})?", "'' or top:N"),
        "--learning-rate": Float(1e-8, 1.0), "--warmup-steps": Int(0, 100_000), "--epochs": Float(0.0, 100.0),
        "--max-steps": Int(0, 1_000_000), "--micro-batch-size": Int(1, 256), "--gradient-accumulation": Int(1, 1024),
        "--weight-decay": Float(0.0, 1.0), "--max-grad-norm": Float(0.0, 100.0), "--cutoff-len": Int(64, 32_768),
        "--max-samples": Int(0, 10_000_000), "--device": DEVICE, "--dtype": Choice(DTYPES),
        "--threads": Int(0, cpu_count), "--seed": SEED, "--save-steps": Int(1, 1_000_000),
        "--log-steps": Int(1, 100_000), "--save-dtype": Choice(ADAPTER_DTYPES),
        "--init-adapter": NameOrPath(lambda: (), "adapter", adapter_roots),
    }, many=frozenset({"--data", "--target-modules"}))


def _bench() -> Allowed:
    from gpt4tools.llm import BACKENDS

    # bench and bench-chat share what the Benchmark tab sets; there is no free field.
    return Allowed({"--data": InRoots(), "--baseline": Choice(("no-tool",)), "--model": Model(),
                    "--backend": Choice(BACKENDS), "--device": DEVICE, "--adapter": NameOrPath(
                        lambda: ("none",), "adapter", adapter_roots), "--limit": Int(0, 10_000_000)})


ALLOWED: dict[str, Callable[[], Allowed]] = {"data": _data_build, "train": _train, "bench": _bench,
                                             "bench-chat": _bench}


def check_url(option: str, value: str) -> str:
    """An http(s) server URL with a host and no credentials in it."""
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.username or parts.password or any(c.isspace() or c == "\0" for c in url):
        raise Refused(f"{option}: {value!r} is not an http(s) server URL (like http://127.0.0.1:8000/v1)")
    return url


# -- checking a command line -------------------------------------------------------------------
def check_value(command: str, option: str, value: str, *, served: bool = False) -> str:
    """One form field's value, checked as `option` of `command`. `served`: a model named to an
    OpenAI-compatible server, which is sent as a name and never opened."""
    if served and option == "--model":
        return SERVED_NAME.check(option, str(value).strip())
    spec = ALLOWED[command]().options[option]
    return spec.check(option, str(value))


def _split_words(text: str) -> list[str]:
    if "\0" in text:
        raise Refused("More options: a NUL character is not allowed")
    try:
        return shlex.split(text)
    except ValueError as e:  # an unclosed quote
        raise Refused(f"More options: cannot split {text!r} into words ({e})") from None


def parse_options(command: str, text: str, taken: Iterable[str] = ()) -> list[str]:
    """The "More options" field as checked arguments. `taken`: options the form's own fields
    set, which the field may not set again (argparse would silently keep the last)."""
    allowed = ALLOWED[command]()
    seen = set(taken)
    words = _split_words(text or "")
    out: list[str] = []
    i = 0
    while i < len(words):
        option, has_inline, inline = words[i].partition("=")
        i += 1
        spec = _lookup(allowed, option, seen)
        seen.add(option)
        if not spec.takes_value:
            if has_inline:
                spec.check(option, inline)  # raises: a flag has no value
            out.append(option)
            continue
        values = [inline] if has_inline else []
        while i < len(words) and not words[i].startswith("--") and (not values or option in allowed.many):
            values.append(words[i])
            i += 1
        if not values:
            raise Refused(f"{option} needs a value")
        out += [option, *(spec.check(option, v) for v in values)]
    return out


def _lookup(allowed: Allowed, option: str, seen: set[str]):
    if not option.startswith("--"):
        raise Refused(f"More options: {option!r} is not an option (options start with --; one value each)")
    if option not in allowed.options:
        names = " ".join(sorted(allowed.options))
        raise Refused(f"{option} is not allowed in a job started from the app; allowed: {names}")
    if option in seen and option not in allowed.repeatable:
        raise Refused(f"{option} is given twice (or is already set by a field of the form)")
    return allowed.options[option]
