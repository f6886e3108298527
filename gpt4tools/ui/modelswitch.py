"""The Chat tab's model switch: which model, adapter and backend the operator may pick in the
browser, and the checks a pick goes through before the agent loads it in the background.

Switching changes the model of every session (there is one shared agent: each loaded LLM costs
hundreds of MB), so it exists only where the operator started the app with --allow-model-switch
(`build_app(switcher=...)`). Every value goes through the job forms' allow-lists (ui/jobargs):
a model is a known name or a path inside the job folders, an adapter one of adapters/* or a
folder under data/, runs/ or assets/; a browser cannot make the app load an arbitrary path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gpt4tools import paths
from gpt4tools.ui import jobargs, trainplan

# The agent for (model, adapter or None, backend); raises when it cannot load.
Switcher = Callable[[str, "str | None", str], object]
DEFAULT_ADAPTER = ""  # the model's own default adapter (the committed one for "default")
NO_ADAPTER = "none"
OFF_NOTE = ("Switching the model here is off: it changes the model of every session. Start the app with "
            "`--allow-model-switch` to allow it.")


def model_choices() -> list[str]:
    """'default' and the LLMs of the weights manifest (entries with a GGUF)."""
    from gpt4tools import weights

    llms = sorted(name for name, entry in weights.load_manifest().items() if "model.gguf" in entry.files)
    return ["default", *llms]


def _label(folder: Path) -> str:
    return str(folder.relative_to(paths.REPO)) if folder.is_relative_to(paths.REPO) else str(folder)


def adapter_choices(train_root: Path) -> list[tuple[str, str]]:
    """The model's default, none, the committed adapters, then finished training runs (newest first)."""
    trained = [(f"{_label(p)} (trained {_base(p)})", str(p)) for p in trainplan.trained_adapters(train_root)]
    committed = [(f"{_label(p)} ({_base(p)})", str(p)) for p in trainplan.committed_adapters()]
    return [("the model's default", DEFAULT_ADAPTER), ("none (base model only)", NO_ADAPTER), *committed, *trained]


def _base(folder: Path) -> str:
    return (trainplan.read_config(folder) or {}).get("base_model") or "base unknown"


def base_model_of(adapter: str) -> str | None:
    """The base model an adapter folder was trained on (its train_config.json), to preselect it."""
    if adapter in (DEFAULT_ADAPTER, NO_ADAPTER):
        return None
    return (trainplan.read_config(Path(adapter)) or {}).get("base_model")


def checked(model: str, adapter: str, backend: str) -> tuple[str, str | None, str]:
    """The pick as load_llm takes it, each value through the allow-lists; Refused otherwise."""
    backend = jobargs.check_value("bench", "--backend", backend or "auto")
    model = jobargs.check_value("bench", "--model", (model or "default").strip(), served=backend == "openai")
    adapter = (adapter or "").strip()
    if adapter:
        adapter = jobargs.check_value("bench", "--adapter", adapter)
        if adapter != NO_ADAPTER and not (Path(adapter) / "adapter_config.json").is_file():
            raise jobargs.Refused(f"adapter: {adapter} is not a LoRA adapter folder (no adapter_config.json)")
    return model, adapter or None, backend


def describe(model: str, adapter: str | None, backend: str) -> str:
    shown = "its default adapter" if adapter is None else "no adapter" if adapter == NO_ADAPTER \
        else f"adapter {_label(Path(adapter))}"
    return f"{model} with {shown} ({backend})"
