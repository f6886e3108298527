"""LLM backend speed on the real GPT4Tools prompt: time to first token and decode tokens/s.

    python scripts/bench_llm.py --models gemma-3-270m smollm2-135m qwen2.5-coder-0.5b --backends transformers
    python scripts/bench_llm.py --models gemma-3-270m --backends transformers llamacpp raw-llamacpp
    python scripts/bench_llm.py --models smollm2-135m --adapter adapters/default \
        --backends llamacpp:bf16 llamacpp:q8_0 transformers:bf16 transformers:fp32

A backend may name its form after a colon: `llamacpp:FORM` (llamacpp.GGUF_FORMS; the merged
forms need --adapter) and `transformers:DTYPE`; without one, --dtype and --gguf apply.

All backends of a model load in this process and run the same prompt: one warm-up each,
then --repeats rounds, round-robin over the backends; medians are reported. `raw-llamacpp`
calls llama_cpp.Llama directly (no gpt4tools code), the reference our llamacpp backend is
compared with. llama.cpp's KV cache is reset before each run, so the time to first token
includes the whole prefill (otherwise it reuses the previous run's identical prompt).
Tokens are counted by re-tokenizing the generated text, for every backend alike. Prints a
Markdown table and writes JSON with --out.

`--agent-step` also times the agent's second step (the first prompt plus one tool step and
its observation): time to first token with the prefix cache emptied ("cold", the whole
prompt encoded) and right after the first step ("warm", only the new tail encoded), for
each backend but raw-llamacpp; their ratio is what prefix reuse saves per agent step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt4tools import react  # noqa: E402
from gpt4tools.history import Conversation  # noqa: E402
from gpt4tools.prompt import PromptTemplate  # noqa: E402
from gpt4tools.registry import build_registry  # noqa: E402


def real_prompt(all_tools: bool = False) -> str:
    """A benchmark-style prompt offering 4 tools, or (all_tools) the app's: every available tool."""
    t = PromptTemplate.load()
    reg = build_registry()
    names = ["Edge Detection On Image", "Detect the Give Object", "Pose Detection On Image", "Get Photo Description"]
    specs = reg.available().specs() if all_tools else [reg[n].spec for n in names if n in reg]
    conv = Conversation(t)
    conv.add_image("image/qwertyui.png", "a cat lying on a sofa next to a cup of coffee")
    return t.render(specs, conv.render(), "detect the cat in image/qwertyui.png", "")


def step_two(prompt: str) -> str:
    """The agent's second prompt after `prompt`: its first step and observation appended."""
    call = react.ToolCall("Detect the Give Object", "image/qwertyui.png, cat")
    return prompt + react.render_step(call, "Result saved as image/ab12_detect_qwertyui_qwertyui.png\n"
                                            "cat [12, 40, 300, 280]")


def forget_prefix(llm) -> None:
    """Empty a backend's prefix cache, so the next prompt is encoded from scratch."""
    if hasattr(llm, "llm") and hasattr(llm.llm, "reset"):
        llm.llm.reset()  # llama.cpp
    if getattr(llm, "prefix", None) is not None:
        from gpt4tools.llm.hf import PrefixCache

        llm.prefix = PrefixCache()


def agent_step(llm, prompt: str, max_new: int):
    """(cold, warm) time to first token of the agent's second step; see the module docstring."""
    second = step_two(prompt)

    def once():
        forget_prefix(llm)
        cold = time_pieces(llm.stream(second, stop=react.STOP, max_new_tokens=max_new), llm.count_tokens)[0]
        forget_prefix(llm)
        for _ in llm.stream(prompt, stop=react.STOP, max_new_tokens=max_new):  # the first step fills the cache
            pass
        warm = time_pieces(llm.stream(second, stop=react.STOP, max_new_tokens=max_new), llm.count_tokens)[0]
        return cold, warm

    return once


def time_pieces(pieces: Iterable[str], count_tokens) -> tuple[float, float, int]:
    """(time to first piece, decode tokens/s after it, new tokens), the same for every backend:
    tokens are counted by re-tokenizing the text, never by counting stream chunks."""
    t0 = time.perf_counter()
    first = None
    text = ""
    for piece in pieces:
        if first is None:
            first = time.perf_counter() - t0
        text += piece
    total = time.perf_counter() - t0
    n = count_tokens(text)
    return first or total, (n - 1) / max(total - (first or total), 1e-9) if n > 1 else 0.0, n


def raw_llamacpp(path: str, prompt: str, max_new: int):
    """llama_cpp.Llama on its own, configured as our backend configures it."""
    from llama_cpp import Llama

    from gpt4tools.llm.llamacpp import safe_process_defaults

    safe_process_defaults()  # the weight buffers our backend uses on this CPU (AMX repacking crashes)
    llm = Llama(model_path=path, n_ctx=4096, verbose=False, n_threads=os.cpu_count())

    def pieces():
        for chunk in llm.create_completion(prompt, max_tokens=max_new, temperature=0.0, stop=list(react.STOP),
                                           stream=True):
            yield chunk["choices"][0]["text"]

    def once():
        llm.reset()  # no KV-cache reuse of the previous run's prompt: time the real prefill
        return time_pieces(pieces(), lambda t: len(llm.tokenize(t.encode("utf-8"), add_bos=False)))

    return once


def ours(llm, prompt: str, max_new: int):
    def once():
        forget_prefix(llm)  # as above: time the whole prefill
        return time_pieces(llm.stream(prompt, stop=react.STOP, max_new_tokens=max_new), llm.count_tokens)

    return once


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gemma-3-270m"])
    ap.add_argument("--backends", nargs="+", default=["transformers"])
    ap.add_argument("--dtype", default="auto", help="transformers dtype where a backend names none")
    ap.add_argument("--gguf", default="auto", help="llama.cpp form where a backend names none")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--all-tools", action="store_true", help="the app's prompt: every available tool offered")
    ap.add_argument("--agent-step", action="store_true", help="also time the agent's second step, cold vs warm cache")
    ap.add_argument("--adapter", default="none", help="adapter for our backends (default none: the base alone)")
    ap.add_argument("--out")
    args = ap.parse_args()

    from gpt4tools import weights
    from gpt4tools.llm import load_llm

    prompt = real_prompt(args.all_tools)
    rows = []
    for model in args.models:
        runners, meta, steps = {}, {}, {}
        for backend in args.backends:
            t0 = time.perf_counter()
            if backend == "raw-llamacpp":
                runners[backend] = raw_llamacpp(str(weights.path(model) / "model.gguf"), prompt, args.max_new_tokens)
                n_prompt = None
            else:
                name, _, form = backend.partition(":")
                extra = {"dtype": form or args.dtype} if name == "transformers" else {"gguf": form or args.gguf}
                llm = load_llm(model, adapter=args.adapter, backend=name, **extra)
                runners[backend] = ours(llm, prompt, args.max_new_tokens)
                if args.agent_step:
                    steps[backend] = agent_step(llm, prompt, args.max_new_tokens)
                n_prompt = llm.count_tokens(prompt)
            meta[backend] = (round(time.perf_counter() - t0, 1), n_prompt)
            runners[backend]()  # warm-up: page-in, weight repacking
        # Round-robin, so that a slow spell of the machine does not land on one backend only.
        runs = {b: [] for b in runners}
        for _ in range(args.repeats):
            for b, once in runners.items():
                runs[b].append(once())
        step_runs = {b: [once() for _ in range(args.repeats)] for b, once in steps.items()}
        for b, rs in runs.items():
            row = {"model": model, "backend": b, "load_s": meta[b][0], "prompt_tokens": meta[b][1],
                   "ttft_s": round(statistics.median(r[0] for r in rs), 3),
                   "decode_tok_s": round(statistics.median(r[1] for r in rs), 1),
                   "new_tokens": rs[-1][2], "repeats": len(rs)}
            if b in step_runs:
                cold = statistics.median(r[0] for r in step_runs[b])
                warm = statistics.median(r[1] for r in step_runs[b])
                row.update(step2_cold_ttft_s=round(cold, 3), step2_warm_ttft_s=round(warm, 3),
                           step2_speedup=round(cold / warm, 2) if warm else None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | backend | prompt tokens | load s | time to first token s | decode tok/s |"
          "\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {r['prompt_tokens']} | {r['load_s']} | {r['ttft_s']} "
              f"| {r['decode_tok_s']} |")
    for r in rows:
        if "step2_speedup" in r:
            print(f"{r['model']} {r['backend']}: agent step 2, time to first token {r['step2_cold_ttft_s']} s with "
                  f"the whole prompt encoded, {r['step2_warm_ttft_s']} s reusing step 1's prefix "
                  f"({r['step2_speedup']}x)")
    # The target: our llamacpp path >= 0.8x raw llama.cpp, measured in this one command.
    raw = {r["model"]: r for r in rows if r["backend"] == "raw-llamacpp"}
    for r in rows:
        ref = raw.get(r["model"])
        if ref and r["backend"] != "raw-llamacpp" and ref["decode_tok_s"]:
            r["decode_ratio_vs_raw"] = round(r["decode_tok_s"] / ref["decode_tok_s"], 2)
            r["ttft_ratio_vs_raw"] = round(ref["ttft_s"] / r["ttft_s"], 2) if r["ttft_s"] else None
            print(f"{r['model']} {r['backend']}: decode {r['decode_ratio_vs_raw']}x raw llama.cpp, "
                  f"time to first token {r['ttft_ratio_vs_raw']}x (higher is faster)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
