"""What grammar-constrained decoding costs per agent step: on the transformers backend,
unconstrained vs xgrammar vs llguidance (the library the backends use), and on llama.cpp, none vs
its own grammar sampler vs llguidance; on the real default model and a real agent prompt.

    .venv/bin/python scripts/bench_constrained.py [--runs 3] [--model default] [--json out.json]
    (xgrammar is not a dependency: `pip install xgrammar` first to compare it; left out otherwise)

The prompt is the agent's own (gpt4tools.agent: the tools retrieval offers for the message, an
uploaded photo announced in the history), and the grammar the agent passes with it
(Agent.step_grammar), for a message that needs a tool and one that does not. Each engine decodes
the same prompt greedily `--runs` times in this one process, the engines interleaved run by run;
the table gives medians and the ratio to unconstrained decoding in the same run, in two settings:
- cold: the whole prompt is encoded (no prefix reused): a turn's first step;
- warm: the prompt's keys/values are reused (HFCausalLM.prefix, llama.cpp's own): only the step
  is decoded, where the constraint's share of the time is largest.
Wall time, and CPU time of the process (all threads): on a machine shared with other jobs the
wall time swings several-fold between identical runs; with `--threads 1` (no thread spin-waiting
for a descheduled sibling) CPU time is the steadier measure.
"constraint CPU ms/token" is the logits processor's own time (mask computed and applied) per
decoded token; "first use" of a grammar is its compilation (llguidance: GBNF -> Lark -> matcher;
xgrammar: compiled against the vocabulary), "again" the same grammar from the cache.
Both libraries read the GBNF that llama.cpp takes (react.step_grammar): xgrammar directly,
llguidance through its GBNF-to-Lark converter. The llguidance engine is the backend's own
(gpt4tools.llm.hf.Grammars); xgrammar is wired here the same way, for the comparison only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import cpu_model  # noqa: E402  scripts/benchlib.py (this folder is on sys.path)

from gpt4tools import react  # noqa: E402

MESSAGES = {
    "tool": "can you find the edges in this picture?",
    "no-tool": "why is the sky blue?",
}


class Timed:
    """A logits processor, with the CPU time spent in it (the constraint's own cost) added up."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids, scores):
        t = time.thread_time()  # it runs in the decoding thread
        out = self.inner(input_ids, scores)
        self.seconds += time.thread_time() - t
        self.calls += 1
        return out


class LLGuidanceEngine:
    """What the backend uses: gpt4tools.llm.hf.Grammars (llguidance; the GBNF converted to Lark)."""

    name = "llguidance"

    def __init__(self, llm):
        from gpt4tools.llm.grammar import Grammars

        self.grammars = Grammars.for_hf(llm.tokenizer, llm.model)

    def processor(self, grammar: str):
        from gpt4tools.llm.hf import GrammarMask

        return GrammarMask(self.grammars, [grammar])


class XGrammarEngine:
    """xgrammar, wired the same way: the GBNF compiled against the tokenizer (the compiler caches
    it), a GrammarMatcher per decode fills the bitmask, xgrammar's CPU kernel applies it."""

    name = "xgrammar"

    def __init__(self, llm):
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab = llm.model.config.vocab_size
        ids = llm.model.generation_config.eos_token_id  # the end tokens, as the backend picks them
        eos = sorted({*([ids] if isinstance(ids, int) else ids or []), llm.tokenizer.eos_token_id} - {None})
        info = xgr.TokenizerInfo.from_huggingface(llm.tokenizer, vocab_size=self.vocab, stop_token_ids=eos)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def processor(self, grammar: str):
        return _XGrammarProcessor(self.xgr, self.compiler.compile_grammar(grammar), self.vocab)


class _XGrammarProcessor:
    def __init__(self, xgr, compiled, vocab):
        self.xgr, self.matcher = xgr, xgr.GrammarMatcher(compiled)
        self.mask = xgr.allocate_token_bitmask(1, vocab)
        self.started = False

    def __call__(self, input_ids, scores):
        if self.started and not self.matcher.is_terminated():
            if not self.matcher.accept_token(int(input_ids[0, -1])):
                raise RuntimeError("xgrammar refused the token it allowed")
        self.started = True
        if not self.matcher.is_terminated():
            self.matcher.fill_next_token_bitmask(self.mask, 0)
            self.xgr.apply_token_bitmask_inplace(scores, self.mask)
        return scores


ENGINES = {"xgrammar": XGrammarEngine, "llguidance": LLGuidanceEngine}


def build_case(message: str, store, agent):
    """The agent's first-step prompt for `message` and the grammar it would decode it under."""
    from gpt4tools.history import Conversation

    conversation = Conversation(agent.template)
    for name in store.names():
        conversation.add_image(name, "a small tabby cat sitting in front of a wooden door")
    offered = agent.offered(message)
    return agent.prompt(conversation, message, "", offered), agent.step_grammar(offered, store)


def hf_step(llm, prompt: str, processor, max_new_tokens: int, warm: bool) -> tuple[float, float, int, str]:
    """One greedy step through HFCausalLM's own generate path, with `processor` as the constraint."""
    from gpt4tools.llm.hf import _no_grad

    if not warm:
        llm.prefix.cache = None  # encode the whole prompt
    inputs = llm._inputs(prompt)
    n = inputs["input_ids"].shape[1]
    kw = llm._gen_kwargs(react.STOP, max_new_tokens, n)
    if processor is not None:
        kw["logits_processor"] = [processor]
    t0, c0 = time.perf_counter(), time.process_time()
    with _no_grad():
        out, _ = llm._cached_generate(inputs, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    new = out[0, n:]
    return wall, cpu, int(new.shape[0]), llm.tokenizer.decode(new, skip_special_tokens=True)


def summarize(walls: list[float], cpus: list[float], tokens: int, text: str, base: tuple[float, float],
              own: list[float] | None = None) -> dict:
    """Medians. CPU time (all threads of this process) is the steadier measure on a shared machine."""
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    row = {"ms": round(1000 * wall, 1), "cpu_ms": round(1000 * cpu, 1), "tokens": tokens,
           "cpu_ms_per_token": round(1000 * cpu / max(tokens, 1), 1),
           "ratio": round(wall / base[0], 3), "cpu_ratio": round(cpu / base[1], 3), "text": text}
    if own is not None:  # the processor's own CPU time per decoded token
        row["constraint_ms_per_token"] = round(1000 * statistics.median(own), 3)
    return row


def bench_transformers(args, store, results) -> None:
    from gpt4tools.agent import Agent
    from gpt4tools.llm import load_llm
    from gpt4tools.prompt import template_for
    from gpt4tools.registry import build_registry

    t0 = time.perf_counter()
    llm = load_llm(args.model, backend="transformers")
    log(f"transformers: {llm.name} loaded in {time.perf_counter() - t0:.1f} s")
    agent = Agent(llm, build_registry().available(), template_for(llm.adapter))
    names = [n for n in args.engines.split(",") if n]
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        log(f"not installed, left out: {', '.join(missing)} (pip install {' '.join(missing)} to compare)")
        names = [n for n in names if n not in missing]
    engines = {}
    for name in names:
        t = time.perf_counter()
        engines[name] = ENGINES[name](llm)
        results["setup_ms"][name] = round(1000 * (time.perf_counter() - t), 1)  # tokenizer tables: once per model
    out = results["transformers"] = {"model": llm.name}
    for case, message in MESSAGES.items():
        prompt, grammar = build_case(message, store, agent)
        row: dict = {"message": message, "prompt_tokens": llm.count_tokens(prompt), "grammar": grammar,
                     "compile_ms": {}}
        for name, eng in engines.items():
            t = time.perf_counter()
            eng.processor(grammar)
            row["compile_ms"][name] = round(1000 * (time.perf_counter() - t), 2)  # a grammar's first use
            # a grammar seen before (the backend's LRU, xgrammar's compiler cache): what later steps pay
            t = time.perf_counter()
            eng.processor(grammar)
            row.setdefault("reuse_ms", {})[name] = round(1000 * (time.perf_counter() - t), 2)
        for warm in (False, True):
            key = "warm" if warm else "cold"
            walls: dict[str, list[float]] = {m: [] for m in ["none", *engines]}
            cpus: dict[str, list[float]] = {m: [] for m in walls}
            own: dict[str, list[float]] = {m: [] for m in engines}
            last: dict[str, tuple[int, str]] = {}
            hf_step(llm, prompt, None, args.max_new_tokens, warm)  # warm-up; for "warm", the prefix
            for r in range(args.runs):
                for m in walls:  # interleaved, so drifts in machine load hit every engine alike
                    proc = None if m == "none" else Timed(engines[m].processor(grammar))
                    wall, cpu, n, text = hf_step(llm, prompt, proc, args.max_new_tokens, warm)
                    walls[m].append(wall)
                    cpus[m].append(cpu)
                    last[m] = (n, text)
                    if proc is not None:
                        own[m].append(proc.seconds / max(proc.calls, 1))
                    log(f"  {case} {key} run {r + 1}/{args.runs} {m}: {wall:.2f} s ({cpu:.2f} s CPU), {n} tokens")
            base = (statistics.median(walls["none"]), statistics.median(cpus["none"]))
            row[key] = {m: summarize(walls[m], cpus[m], *last[m], base, own.get(m)) for m in walls}
        out[case] = row


def bench_llamacpp(args, store, results) -> None:
    from gpt4tools.agent import Agent
    from gpt4tools.llm import load_llm
    from gpt4tools.prompt import template_for
    from gpt4tools.registry import build_registry

    t0 = time.perf_counter()
    llm = load_llm(args.model, backend="llamacpp", **({"n_threads": args.threads} if args.threads else {}))
    log(f"llama.cpp: {llm.name} loaded in {time.perf_counter() - t0:.1f} s")
    agent = Agent(llm, build_registry().available(), template_for(llm.adapter))
    out = results["llamacpp"] = {"model": llm.name}
    engines = ["llama.cpp"]  # its own grammar sampler
    if importlib.util.find_spec("llguidance") is not None:
        t = time.perf_counter()
        llm._llguidance()
        results["setup_ms"]["llguidance (llama.cpp vocabulary)"] = round(1000 * (time.perf_counter() - t), 1)
        engines.append("llguidance")  # what the backend uses where it is installed
    for case, message in MESSAGES.items():
        prompt, grammar = build_case(message, store, agent)
        t = time.perf_counter()
        llm.grammar(grammar)
        row: dict = {"message": message, "prompt_tokens": llm.count_tokens(prompt),
                     "compile_ms": {"llama.cpp": round(1000 * (time.perf_counter() - t), 2)}}
        if "llguidance" in engines:
            t = time.perf_counter()
            llm._llguidance().matcher(grammar)
            row["compile_ms"]["llguidance"] = round(1000 * (time.perf_counter() - t), 2)
        for warm in (False, True):
            key = "warm" if warm else "cold"
            walls: dict[str, list[float]] = {m: [] for m in ["none", *engines]}
            cpus: dict[str, list[float]] = {m: [] for m in walls}
            last = {}
            llm.generate(prompt, stop=react.STOP, max_new_tokens=args.max_new_tokens)
            for r in range(args.runs):
                for m in walls:
                    if not warm:
                        llm.llm.reset()  # forget the evaluated prompt: encode it all again
                    llm.grammar_engine = m if m != "none" else "auto"
                    c0 = time.process_time()
                    g = llm.generate(prompt, stop=react.STOP, max_new_tokens=args.max_new_tokens,
                                     grammar=None if m == "none" else grammar)
                    cpus[m].append(time.process_time() - c0)
                    walls[m].append(g.seconds)
                    last[m] = (g.completion_tokens, g.text)
                    log(f"  llama.cpp {case} {key} run {r + 1}/{args.runs} {m}: {g.seconds:.2f} s "
                        f"({cpus[m][-1]:.2f} s CPU)")
            base = (statistics.median(walls["none"]), statistics.median(cpus["none"]))
            row[key] = {m: summarize(walls[m], cpus[m], *last[m], base) for m in walls}
        out[case] = row


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--engines", default="xgrammar,llguidance", help="transformers engines to compare")
    ap.add_argument("--llamacpp", action=argparse.BooleanOptionalAction, default=True,
                    help="also llama.cpp's own grammar sampler, free vs constrained (where it is installed)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch and llama.cpp (default: theirs). 1 on a shared machine: no thread "
                         "spin-waits for a descheduled sibling, so CPU time measures the work")
    ap.add_argument("--image", default=str(REPO / "assets" / "chelsea.jpg"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    from gpt4tools.images import ImageStore

    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "runs": args.runs,
                     "max_new_tokens": args.max_new_tokens, "setup_ms": {},
                     "versions": {n: importlib.metadata.version(n) for n in ["transformers", *args.engines.split(",")]
                                  if n and importlib.util.find_spec(n) is not None}}
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(Path(tmp))
        store.add_upload(args.image)
        bench_transformers(args, store, results)
        if args.llamacpp and importlib.util.find_spec("llama_cpp") is not None:
            results["versions"]["llama_cpp_python"] = importlib.metadata.version("llama_cpp_python")
            bench_llamacpp(args, store, results)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def report(results: dict) -> None:
    print(f"{results['cpu']}, {results['threads']} threads; median of {results['runs']} runs per cell; "
          f"ratio: against unconstrained in the same run")
    print(f"setup (once per model): {results['setup_ms']} ms")
    for backend in ("transformers", "llamacpp"):
        if backend not in results:
            continue
        res = results[backend]
        print(f"\n{backend}: {res['model']}")
        print("| case | setting | engine | tokens | wall ms/step | ratio | CPU ms/step | CPU ratio | CPU ms/token "
              "| constraint CPU ms/token |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for case in MESSAGES:
            row = res[case]
            for key in ("cold", "warm"):
                for m, r in row[key].items():
                    own = r.get("constraint_ms_per_token", "")
                    print(f"| {case} | {key} | {m} | {r['tokens']} | {r['ms']:.0f} | {r['ratio']:.3f} | "
                          f"{r['cpu_ms']:.0f} | {r['cpu_ratio']:.3f} | {r['cpu_ms_per_token']:.1f} | {own} |")
        for case in MESSAGES:
            row = res[case]
            print(f"{case} ({row['prompt_tokens']} prompt tokens): first use of its grammar {row['compile_ms']} ms"
                  + (f", again {row['reuse_ms']} ms" if "reuse_ms" in row else ""))
            for m, r in row["cold"].items():
                print(f"  {m:10} -> {r['text']!r}")


if __name__ == "__main__":
    sys.exit(main())
