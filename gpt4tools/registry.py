"""The tool registry: the explicit catalog in `tools.CATALOG`, instantiated with devices.

`--load` follows the original GPT4Tools convention, "ToolName_device,...", where ToolName
is the tool's class name or its exact display name, and "all" selects every tool.
Only available tools are offered to the LLM; the others stay listed with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from gpt4tools.tool import Availability, Tool, ToolSpec


class UnknownToolError(KeyError):
    def __init__(self, name: str, valid: Iterable[str]):
        self.name = name
        self.valid = list(valid)
        super().__init__(name)

    def __str__(self) -> str:
        return f"{self.name!r} is not a valid tool, try one of [{', '.join(self.valid)}]."


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


class ToolRegistry(Mapping[str, Tool]):
    """Tools by exact name. `resolve` also accepts aliases and case/spacing slips."""

    def __init__(self, tools: Iterable[Tool]):
        self._tools: dict[str, Tool] = {}
        self._lookup: dict[str, str] = {}
        for tool in tools:
            name = tool.spec.name
            if name in self._tools:
                raise ValueError(f"duplicate tool name {name!r}")
            self._tools[name] = tool
            for key in (name, *tool.spec.aliases, type(tool).__name__):
                self._lookup.setdefault(_norm(key), name)
        self._availability: dict[str, Availability] = {}

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, self._tools) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def resolve(self, name: str) -> Tool:
        """Exact name first, then aliases and normalised spelling (model and teacher output)."""
        key = self.canonical(name)
        if key is None:
            raise UnknownToolError(name, self._tools)
        return self._tools[key]

    def canonical(self, name: str) -> str | None:
        """The registry's own name for a tool name as written (`resolve`'s spellings), or None."""
        return name if name in self._tools else self._lookup.get(_norm(name))

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def availability(self, name: str, refresh: bool = False) -> Availability:
        if refresh or name not in self._availability:
            self._availability[name] = self._tools[name].availability()
        return self._availability[name]

    def available(self, refresh: bool = False) -> "ToolRegistry":
        """The tools that can run now: the only ones the LLM is ever offered."""
        return ToolRegistry(t for n, t in self._tools.items() if self.availability(n, refresh).ok)

    def unavailable(self, refresh: bool = False) -> list[tuple[ToolSpec, Availability]]:
        """The tools that cannot run now, each with why and how to enable it."""
        checked = [(t.spec, self.availability(n, refresh)) for n, t in self._tools.items()]
        return [(spec, avail) for spec, avail in checked if not avail.ok]

    def subset(self, names: Iterable[str]) -> "ToolRegistry":
        return ToolRegistry(self.resolve(n) for n in names)


def parse_load(load: str | None) -> dict[str, str]:
    """'Detection_cpu,Edge Detection On Image_cuda:0' -> {key: device}; None/'all' -> {}."""
    if not load or load.strip().lower() in ("all", "all_cpu"):
        return {}
    out: dict[str, str] = {}
    for item in load.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, device = item.rpartition("_")
        if not sep or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
            key, device = item, "cpu"
        out[key] = device
    return out


def build_registry(load: str | None = None, catalog: Iterable[type[Tool]] | None = None) -> ToolRegistry:
    """Instantiate tools from the catalog. `load` picks tools and devices (default: all on CPU)."""
    if catalog is None:
        from tools import CATALOG as catalog  # the explicit list of all 31 tools
    catalog = list(catalog)
    wanted = parse_load(load)
    if not wanted:
        return ToolRegistry(cls() for cls in catalog)
    by_key = {}
    for cls in catalog:
        for key in (cls.__name__, cls.spec.name, *cls.spec.aliases):
            by_key[_norm(key)] = cls
    chosen = []
    for key, device in wanted.items():
        cls = by_key.get(_norm(key))
        if cls is None:
            raise UnknownToolError(key, [c.spec.name for c in catalog])
        chosen.append(cls(device=device))
    return ToolRegistry(chosen)
